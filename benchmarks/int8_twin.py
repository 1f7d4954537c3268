"""int8 forms on SmolVLM-256M's shapes, plain and large-gain twin: worst photo tile and probe cosine to fp32, s/tile.

    python benchmarks/int8_twin.py --kinds outlier-asym-fp32-o,outlier-asym-fp32-o-g4 [--repeats 2] [--plain]

The bench's random 256M mmproj (F16) and its large-gain twin (vision_engines.large_gain_twin: outlier channels in
every vision LayerNorm, so the default form's fp32 side paths run in every layer). Each form is built as is (no
self-check), the fp32 graph beside it; the 13 tiles of the bench photo go through bare ONNX Runtime sessions, the
forms interleaved tile by tile, each tile's best of --repeats runs; the figure is the median over tiles of the
per-tile seconds, and each form's ratio to the first kind's on the same weights (the machine may be shared: the
ratios mean more than the seconds). Also each form's worst photo tile and worst probe tile (onnx_probe's three
tiles, the self-check's image) against the fp32 graph.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from vision_engines import large_gain_twin, load_average, pixels_of  # benchmarks/, beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", required=True, help="int8 forms (onnx_int8.INT8_KINDS), the first the baseline")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plain", action="store_true", help="the plain mmproj too, not only the twin")
    args = parser.parse_args()

    from smolcli.bench.files import prepare_files
    from smolcli.bench.onnx_profile import session
    from smolcli.runtime.vision.images import load_image
    from smolcli.runtime.vision.onnx_graph import read_vision_weights
    from smolcli.runtime.vision.onnx_probe import per_tile_cosine, probe_pixels
    from smolcli.runtime.vision.onnx_vision import build_or_reuse

    kinds = args.kinds.split(",")
    f16, _ = prepare_files("256m", "Q8_0", "F16", report=print)
    pixels = pixels_of(f16.mmproj, load_image(f16.image))
    folder = Path(tempfile.mkdtemp(prefix="smolcli-int8-twin-"))
    try:
        twin = large_gain_twin(f16.mmproj, folder / f"large-gain-{f16.mmproj.name}")
        for label, mmproj in ([("plain", f16.mmproj)] if args.plain else []) + [("large-gain twin", twin)]:
            probe = probe_pixels(read_vision_weights(mmproj))
            reference = session(str(build_or_reuse(mmproj, "fp32", folder)), args.threads)
            expected = [reference.run(None, {"pixel_values": p[None]})[0] for p in (*pixels, *probe)]
            del reference
            sessions = {}
            for kind in kinds:
                started = time.perf_counter()
                sessions[kind] = session(str(build_or_reuse(mmproj, "int8", folder, kind)), args.threads)
                print(f"{label}: built {kind} in {time.perf_counter() - started:.0f} s", flush=True)
            print(f"{label}: {len(pixels)} photo tiles, {args.repeats} runs each, interleaved; {load_average()}")
            seconds = {kind: [] for kind in kinds}
            outputs = {kind: [] for kind in kinds}
            last = {}
            for index, tile in enumerate((*pixels, *probe)):
                timed = index < len(pixels)  # the probe's tiles: only their embeddings
                best = {kind: float("inf") for kind in kinds}
                for _ in range(args.repeats if timed else 1):
                    for kind in kinds:
                        started = time.perf_counter()
                        out = sessions[kind].run(None, {"pixel_values": tile[None]})[0]
                        best[kind] = min(best[kind], time.perf_counter() - started)
                        last[kind] = out
                for kind in kinds:
                    outputs[kind].append(last[kind])
                    if timed:
                        seconds[kind].append(best[kind])
            print(f"after: {load_average()}")
            base = float(np.median(seconds[kinds[0]]))
            print(f"| {label}: form | s/tile (median) | vs {kinds[0]} | worst photo tile | worst probe tile |")
            print("| --- | --- | --- | --- | --- |")
            n = len(pixels)
            for kind in kinds:
                ours, ref = np.concatenate(outputs[kind]), np.concatenate(expected)
                median = float(np.median(seconds[kind]))
                photo, probed = per_tile_cosine(ref[:n], ours[:n]), per_tile_cosine(ref[n:], ours[n:])
                print(f"| {kind} | {median:.3f} | {median / base:.2f}x | {photo:.5f} | {probed:.5f} |", flush=True)
            sessions.clear()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
