"""Time and peak RSS of building the default int8 ONNX vision encoder (self-check included), in a bare process.

    python benchmarks/vision_build.py [--shape 256m] [--threads 2] [--repeats 1] [--before TREE ...]

The bench's Q8_0 mmproj of a release's shapes (smolcli bench's files, random weights). Each build is a fresh
process (`onnx_vision.build` into an empty cache folder), so its peak RSS (VmHWM) is its own. --before: an older
source tree (a folder holding smolcli/) built the same way, through PYTHONPATH, interleaved round by round: e.g.
format 9 with `git archive <commit> smolcli | tar -x -C TREE`; --before again for another tree. Prints the CPU
and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from smolcli.bench.files import prepare_files
from smolcli.bench.runs import machine

ONE_BUILD = """
import json, resource, sys, time
from pathlib import Path
from smolcli.runtime.vision.onnx_vision import FORMAT_VERSION, build
started = time.perf_counter()
built = build(Path(sys.argv[1]), "int8", Path(sys.argv[2]), threads=int(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - started, "peak_gb": resource.getrusage(resource.RUSAGE_SELF)
    .ru_maxrss * 1024 / 1e9, "cosine": built.probe_cosine, "precision": built.precision, "format": FORMAT_VERSION}))
"""


def one_build(mmproj: Path, threads: int, tree: Path | None) -> dict:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    with tempfile.TemporaryDirectory(prefix="vision-build-") as folder:
        done = subprocess.run(
            [sys.executable, "-c", ONE_BUILD, str(mmproj), folder, str(threads)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tree,
        )
    if done.returncode != 0:
        sys.exit(f"build failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--before", type=Path, action="append", default=[], help="an older source tree to build with too"
    )
    args = parser.parse_args()
    files, _ = prepare_files(args.shape, "Q4_K_M", "Q8_0", args.threads, lambda m: print(m, file=sys.stderr))
    trees: dict[str, Path | None] = {"this tree": None}
    for i, tree in enumerate(args.before):
        trees["before" if len(args.before) == 1 else f"before {i + 1}"] = tree.resolve()
    print(f"CPU: {machine(args.threads)['cpu']}; {args.threads} threads; load average before: {os.getloadavg()}")
    for round_ in range(args.repeats):
        for name, tree in trees.items():
            r = one_build(files.mmproj, args.threads, tree)
            print(
                f"round {round_ + 1} {name:<10} format {r['format']}: {r['seconds']:.1f} s, peak {r['peak_gb']:.3f} GB, "
                f"probe cosine {r['cosine']}, runs {r['precision']}",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
