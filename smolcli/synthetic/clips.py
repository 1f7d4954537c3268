"""A made-up video clip for benchmarks: a photo-like picture panning under a moving bar, so every frame differs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from smolcli.synthetic.images import photo_like
from smolcli.util.atomic_file import write_atomically


def write_clip(path: Path, seconds: int, fps: int, width: int, height: int) -> Path:
    """An H.264 MP4 of seconds * fps frames, written under a temporary name and renamed into place."""
    import io

    import av

    backdrop = np.asarray(photo_like(width * 2, height))
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        n_frames = seconds * fps
        for index in range(n_frames):
            left = index * width // max(n_frames, 1)
            pixels = np.ascontiguousarray(backdrop[:, left : left + width])
            bar = (index * 7) % width
            pixels[:, bar : bar + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, buffer.getvalue())
    return path


def write_timed_clip(path: Path, stamps: list[float], width: int = 32, height: int = 24, rate: int = 25) -> Path:
    """An H.264 clip (MKV keeps the gaps) with one frame at each of `stamps` seconds, e.g. [0, 1, 997200]: a clip
    whose timing is sparse, as damaged or variable-rate recordings are."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(rate))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for index, seconds in enumerate(stamps):
            pixels = np.full((height, width, 3), index * 40 % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = int(seconds * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
