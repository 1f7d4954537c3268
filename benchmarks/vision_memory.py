"""Peak RSS of `smolcli ask` with an image: the ONNX vision path against mtmd (and an older tree's ONNX path).

    python benchmarks/vision_memory.py [--shape 256m] [--repeats 3] [--first-runs 3] [--threads 2] [--before TREE]

Random weights in a release's real shapes (smolcli bench's files: Q4_K_M model, Q8_0 mmproj, the
1024x768 photo: 13 tiles with the global view). Every run is a fresh `smolcli ask --json --ignore-eos
--no-cache` process (smolcli.bench.runs.ask_command), so each peak RSS (VmHWM) is its own; the
variants interleave. --before: a source tree (a folder holding smolcli/, with smolcli/models and
smolcli/convert inside it) run through PYTHONPATH, e.g. the commit before the ONNX path dropped mtmd:

    git archive BASE smolcli models convert | tar -x -C /tmp/before \\
        && mv /tmp/before/models /tmp/before/convert /tmp/before/smolcli/

The first ONNX run builds the ONNX file (its peak is printed apart); later runs only load it. --first-runs N:
N more first runs, each in a fresh cache, one per round before the round's later runs (their median beside).
Prints the CPU and the load average: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smolcli.bench.files import prepare_files
from smolcli.bench.runs import Setting, ask_command, machine
from smolcli.util.user_cache import HOME_ENV

GB = 1e9


def one_run(command: list[str], home: Path, tree: Path | None) -> dict:
    env = {**os.environ, HOME_ENV: str(home)}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    started = time.perf_counter()
    # `python -m` puts the working folder first on sys.path: run an older tree from inside it, or its
    # PYTHONPATH loses to this checkout's smolcli/
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode != 0:
        sys.exit(f"ask failed: {done.stderr.strip().splitlines()[-1:]}")
    report = json.loads(done.stdout)
    return {
        "peak_gb": report["peak_memory_bytes"] / GB,
        "engine": report["vision_engine"],
        "tiles": report["usage"]["images_encoded"],
        "encode_s": report["timings"]["image_encode_s"],
        "wall_s": time.perf_counter() - started,
        "plan_gb": report["memory_plan"]["total"] / GB if report.get("memory_plan") else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--before", type=Path, help="an older source tree whose ONNX path to measure too")
    parser.add_argument(
        "--first-runs", type=int, default=0, help="this many more first runs (each builds the ONNX file afresh)"
    )
    args = parser.parse_args()

    files, _ = prepare_files(args.shape, "Q4_K_M", "Q8_0", args.threads, lambda m: print(m, file=sys.stderr))
    base = ask_command(files, Setting("default", (), 0), args.tokens, args.threads)
    # a limit far above the run: the report then carries the memory plan, to hold against the peak
    planned = ["--max-memory", "64G"]
    variants = {
        "onnx": (["--vision-engine", "onnx", *planned], None),
        "mtmd": (["--vision-engine", "mtmd", *planned], None),
    }
    if args.before:
        variants["onnx (before)"] = (["--vision-engine", "onnx"], args.before.resolve())
    print(f"CPU: {machine(args.threads)['cpu']}; {args.threads} threads; load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="vision-memory-") as home:
        first = one_run(base[:-1] + variants["onnx"][0] + base[-1:], Path(home), None)  # builds the ONNX file
        print(f"first ONNX run (builds the ONNX file): peak {first['peak_gb']:.3f} GB, planned {first['plan_gb']:.3f}")
        if args.before:  # its own ONNX format: built once before the measured runs too
            before = one_run(base[:-1] + variants["onnx (before)"][0] + base[-1:], Path(home), args.before.resolve())
            print(f"first ONNX run of the older tree: peak {before['peak_gb']:.3f} GB")
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        if args.first_runs:
            runs["onnx, first run"] = []
        for round_ in range(args.repeats):
            if round_ < args.first_runs:  # a first run in a cache of its own, between the later runs
                with tempfile.TemporaryDirectory(prefix="vision-memory-first-") as fresh:
                    flags = variants["onnx"][0]
                    runs["onnx, first run"].append(one_run(base[:-1] + flags + base[-1:], Path(fresh), None))
            for name, (flags, tree) in variants.items():
                runs[name].append(one_run(base[:-1] + flags + base[-1:], Path(home), tree))
    print(f"{args.shape}, {first['tiles']} tiles, medians of {args.repeats}; load average after: {os.getloadavg()}")
    print(f"{'variant':<16} {'engine':<10} {'peak RSS GB':>11} {'min':>7} {'max':>7} {'planned':>8} {'encode s':>9}")
    for name, done in runs.items():
        peaks = [r["peak_gb"] for r in done]
        encode = statistics.median(r["encode_s"] for r in done)
        plan = f"{done[0]['plan_gb']:.3f}" if done[0]["plan_gb"] else "-"
        print(
            f"{name:<16} {done[0]['engine']:<10} {statistics.median(peaks):>11.3f} {min(peaks):>7.3f} "
            f"{max(peaks):>7.3f} {plan:>8} {encode:>9.1f}"
        )


if __name__ == "__main__":
    main()
