"""Real clips made with PyAV for the video tests: moving colored shapes, so every frame differs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".gif": "gif"}


def frame_pixels(index: int, width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    red = (x * 255 // max(width - 1, 1) + index * 17) % 256
    green = (y * 255 // max(height - 1, 1) + index * 5) % 256
    blue = np.full_like(x, (index * 40) % 256)
    image = np.stack([red, green, blue], axis=-1).astype(np.uint8)
    cx = (index * 3) % width
    image[:, max(cx - 2, 0) : cx + 2] = 255  # a white bar that moves
    return image


def make_clip(path: Path, seconds: float, fps: int, width: int, height: int) -> Path:
    """seconds * fps frames at a constant rate, in the container the suffix names."""
    import av

    codec = CODECS[path.suffix]
    n_frames = max(1, int(round(seconds * fps)))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
        for index in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(index, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = int(seconds * 16000)
        for start in range(0, samples, 1024):
            wave = np.sin(np.arange(start, start + 1024) / 10).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_all(path: Path) -> tuple[list[np.ndarray], int, float]:
    """Every frame as RGB, the stream's frame count and average rate: what transformers' PyAV reader sees."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, int(stream.frames), float(stream.average_rate)
