"""Tiles one at a time on the encoder's threads against two at once (docs/benchmarks.md, "Two tiles at once").

    python benchmarks/tiles_at_once.py [--repeats 3]

The default int8 graph on SmolVLM-256M real shapes (random weights), the bench photo's first tiles, through bare
ONNX Runtime sessions made as the encoder makes them (no memory pattern): one at a time on 2 threads (what ships),
two at once on 1-thread sessions, two at once on the 2-thread session, and one thread alone (two threads' scaling).
Rounds interleaved; medians of seconds per tile. Run it on an idle machine: under load, fewer threads per run
look faster because they wait at fewer barriers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from vision_engines import load_average, pixels_of  # benchmarks/, beside this script

TILES = 4


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    options.enable_mem_pattern = False  # as onnx_vision's sessions
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from smolcli.bench.files import prepare_files
    from smolcli.runtime.vision.images import load_image
    from smolcli.runtime.vision.onnx_vision import build_or_reuse

    f16, _ = prepare_files("256m", "Q8_0", "F16", report=print)
    tiles = pixels_of(f16.mmproj, load_image(f16.image))[:TILES]
    path = build_or_reuse(f16.mmproj, "int8", Path(tempfile.mkdtemp(prefix="smolcli-tiles-at-once-")))
    two, one = ort_session(path, 2), ort_session(path, 1)
    pool = ThreadPoolExecutor(2)

    def run(session, tile):
        return session.run(None, {"pixel_values": tile[None]})[0]

    ways = {
        "one at a time, 2 threads (ships)": lambda: [run(two, t) for t in tiles],
        "two at once, 1-thread session": lambda: list(pool.map(lambda t: run(one, t), tiles)),
        "two at once, the 2-thread session": lambda: list(pool.map(lambda t: run(two, t), tiles)),
        "one at a time, 1 thread": lambda: [run(one, t) for t in tiles],
    }
    first = {label: np.concatenate(way()) for label, way in ways.items()}  # warm-up, and the bits compared
    same = all(np.array_equal(out, first[next(iter(first))]) for out in first.values())
    print(f"{TILES} tiles; the same bits every way: {same}; {args.repeats} interleaved rounds; {load_average()}")
    seconds = {label: [] for label in ways}
    for _ in range(args.repeats):
        for label, way in ways.items():
            started = time.perf_counter()
            way()
            seconds[label].append((time.perf_counter() - started) / TILES)
    print(f"after: {load_average()}")
    base = float(np.median(seconds[next(iter(ways))]))
    print("| how | s/tile | against the default |\n| --- | --- | --- |")
    for label, values in seconds.items():
        median = float(np.median(values))
        print(f"| {label} | {median:.3f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
