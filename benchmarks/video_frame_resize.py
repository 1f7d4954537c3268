"""What resizing a clip's frames costs: 64 frames, as transformers' SmolVLM video processor resizes them.

Each frame goes to the preprocessor's longest edge first (2048 for SmolVLM2-256M/500M, 1536 for 2.2B:
transformers' `size` overrides video_size), then to the square of one tile (512 / 384), both with
torchvision's uint8 Lanczos (runtime.frame_resize, exact). Variants, interleaved round by round:

- workers: as `ask --video` runs it (runtime.frame_workers: BLAS on one thread, frames side by side);
- one thread: the same resize, frame after frame, BLAS on one thread;
- BLAS threads: frame after frame with numpy's BLAS left to its own threads (what the limit avoids);
- Pillow: Pillow's Lanczos, the old path (not transformers' pixels), for scale.

  python benchmarks/video_frame_resize.py --frames 64 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time

import numpy as np
from PIL import Image

from smolcli.runtime.video.clip import VideoSampling, resized_size, square_frame
from smolcli.runtime.video.frame_workers import FrameWorkers, one_blas_thread
from smolcli.synthetic.images import photo_like

RELEASES = {
    "256M/500M": VideoSampling(video_size=2048, frame_size=512),
    "2.2B": VideoSampling(video_size=1536, frame_size=384),
}


def with_workers(frames, sampling):
    with FrameWorkers() as workers:
        for frame in frames:
            workers.submit(square_frame, frame, sampling)
        workers.finish()


def one_thread(frames, sampling):
    with one_blas_thread():
        for frame in frames:
            square_frame(frame, sampling)


def blas_threads(frames, sampling):
    for frame in frames:
        square_frame(frame, sampling)


def pillow(frames, sampling):
    for frame in frames:
        image = Image.fromarray(frame)
        first = image.resize(resized_size(image.width, image.height, sampling.video_size), Image.Resampling.LANCZOS)
        first.resize((sampling.frame_size, sampling.frame_size), Image.Resampling.LANCZOS)


VARIANTS = {"workers": with_workers, "one thread": one_thread, "BLAS threads": blas_threads, "Pillow": pillow}


def cpu_name() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="640x360,1280x720,1920x1080", help="frame sizes, WxH, comma-separated")
    args = parser.parse_args()
    print(f"{cpu_name()}, {os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}")
    for size in args.sizes.split(","):
        width, height = (int(side) for side in size.split("x"))
        frames = [np.asarray(photo_like(width, height, seed)) for seed in range(args.frames)]
        for release, sampling in RELEASES.items():
            for variant in VARIANTS.values():  # warm: the weights are planned once per size
                variant(frames[:1], sampling)
            seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for _ in range(args.rounds):
                for name, variant in VARIANTS.items():
                    started = time.perf_counter()
                    variant(frames, sampling)
                    seconds[name].append(time.perf_counter() - started)
            first = resized_size(width, height, sampling.video_size)
            figures = ", ".join(
                f"{name} {min(times):.2f} s (median {statistics.median(times):.2f})" for name, times in seconds.items()
            )
            print(
                f"{args.frames} frames {size} -> {first[0]}x{first[1]} -> {sampling.frame_size}^2 ({release}): {figures}"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
