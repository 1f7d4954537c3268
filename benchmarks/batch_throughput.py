"""Throughput of one `smolcli batch` over N images against N `smolcli ask` processes, side by side in one run.

    python benchmarks/batch_throughput.py --shape tiny --images 24
    python benchmarks/batch_throughput.py --shape 256m --images 4 --max-tiles 4

A random-weight pair in a release's shapes (built once by `smolcli bench`'s file builder, under
$SMOLCLI_HOME/bench), N different photo-like images, a greedy answer of at most --tokens each (the same in both ways), the
embedding cache off in both (so every image is encoded in both), the same threads. The two are run
alternately `--repeats` times; medians. What batch saves is the model load and process start of
every item after the first.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smolcli.bench.files import prepare_files
from smolcli.synthetic.images import photo_like

SMOLCLI = Path(sys.executable).parent / "smolcli"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", help="tiny, 256m, 500m or 2.2b")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tiles", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    files, _ = prepare_files(args.shape, "Q4_K_M", "Q8_0", args.threads, lambda m: print(m, file=sys.stderr))
    common = ["-m", str(files.model), "--mmproj", str(files.mmproj), "-t", str(args.threads), "-n", str(args.tokens)]
    common += ["--no-cache"]  # every image through the encoder, in both ways
    if args.max_tiles:
        common += ["--max-tiles", str(args.max_tiles)]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        paths = []
        for index in range(args.images):
            path = folder / f"photo-{index:03d}.png"
            photo_like(320, 240, seed=index).save(path)
            paths.append(path)
        batch_command = [str(SMOLCLI), "batch", *common, "--prompt", "Describe it.", str(folder)]
        batch_times, ask_times = [], []
        for _ in range(args.repeats):
            batch_times.append(timed(batch_command))
            ask_times.append(sum(timed([str(SMOLCLI), "ask", *common, "-i", str(p), "Describe it."]) for p in paths))
    batch_s, ask_s = statistics.median(batch_times), statistics.median(ask_times)
    print(
        f"{args.shape} shapes, random weights, {args.images} images 320x240, {args.tokens} tokens each, "
        f"{args.threads} threads, embedding cache off, {cpu_name()} ({os.cpu_count()} cores), "
        f"medians of {args.repeats}"
    )
    print(f"{'way':<32}{'seconds':>10}{'images/s':>10}")
    print(f"{'one smolcli batch':<32}{batch_s:>10.2f}{args.images / batch_s:>10.2f}")
    print(f"{f'{args.images} smolcli ask processes':<32}{ask_s:>10.2f}{args.images / ask_s:>10.2f}")
    print(f"batch throughput / ask throughput: {ask_s / batch_s:.2f}x")


if __name__ == "__main__":
    main()
