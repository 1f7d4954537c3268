"""Video clips as SmolVLM2 sees them: which frames, at what time, resized as transformers resizes them.

Decoding goes through PyAV (its wheels bundle FFmpeg). The clip is planned from the container's
metadata first, without decoding, so a ten-hour clip costs what its sampled frames cost: the
frames are decoded one at a time, and only the sampled ones are kept, each resized on a worker
thread (runtime.video.frame_workers) while decoding goes on, exactly as transformers' video processor
resizes it (runtime.video.frame_resize: torchvision's uint8 Lanczos, not Pillow's).

The sampling rule is transformers' SmolVLMVideoProcessor.sample_frames over the frame count
and rate that its PyAV reader reports (stream.frames and average_rate, duration = frames / rate);
each kept frame's timestamp is its own presentation time in the stream's time base.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from smolcli.errors import BadInput
from smolcli.runtime.video.frame_resize import resize_planes, to_rgb
from smolcli.runtime.video.frame_workers import FrameWorkers
from smolcli.runtime.vision.image_tiles import MAX_IMAGE_SIZE, even_longest_edge_size
from smolcli.runtime.vision.images import FIFO_WAIT_SECONDS, STDIN, RGBImage
from smolcli.util.bounded_read import NoWriter, TooLarge, read_path

MAX_CLIP_BYTES = 1 << 30  # read from a named pipe into memory: a clip that large is a file, not a pipe's
SKIP_SECONDS = 1  # the first and last second are skipped when the clip is long enough
SEEK_AHEAD_SECONDS = 10.0  # a sampled frame further ahead than this is reached by seeking, not decoding through


@dataclass(frozen=True)
class VideoSampling:
    """preprocessor_config.json's video_sampling: frames per second, at most max_frames, longest edge."""

    fps: float = 1.0
    max_frames: int = 64
    video_size: int = 512  # longest edge of the first resize
    frame_size: int = 512  # the square each frame ends as: one tile (max_image_size)


@dataclass(frozen=True)
class VideoPlan:
    """What the container says, and which frames the sampling rule takes: no frame decoded yet."""

    source: str
    total_frames: int
    fps: float
    duration: float  # seconds, as transformers computes it: total_frames / fps
    width: int
    height: int
    indices: tuple[int, ...]  # sampled frame numbers, in order

    @property
    def n_frames(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class VideoFrame:
    index: int  # frame number in decode order
    timestamp: float  # seconds from the stream's start, from its time base
    image: RGBImage  # frame_size x frame_size RGB


def sample_indices(total_frames: int, fps: float, duration: float, target_fps: float, max_frames: int) -> list[int]:
    """transformers' SmolVLMVideoProcessor.sample_frames, step by step."""
    desired = max(1, min(int(round(target_fps * duration)), max_frames))
    start, end = 0, total_frames - 1
    if SKIP_SECONDS > 0 and (duration - 2 * SKIP_SECONDS) > (max_frames * target_fps):
        start = int(SKIP_SECONDS * fps)
        end = int(total_frames - SKIP_SECONDS * fps)
    start, end = max(0, start), min(end, total_frames - 1)
    if start >= end:
        start, end = 0, total_frames - 1
    return sorted({int(i) for i in np.linspace(start, end, desired, dtype=int)})


def resized_size(width: int, height: int, longest_edge: int) -> tuple[int, int]:
    """(width, height) after transformers' video resize to a longest edge (even short side)."""
    return even_longest_edge_size(width, height, min(MAX_IMAGE_SIZE, longest_edge))


def square_frame(pixels: np.ndarray, sampling: VideoSampling) -> np.ndarray:
    """uint8 [H, W, 3]: longest edge to video_size, then the square of one tile, as transformers resizes frames.

    Both resizes are torchvision's uint8 Lanczos (runtime.video.frame_resize), not Pillow's: transformers'
    video processor resizes tensors, where its image processor for SmolVLM resizes with Pillow.
    """
    height, width = pixels.shape[:2]
    first = resize_planes(pixels.transpose(2, 0, 1), *resized_size(width, height, sampling.video_size))
    # the first resize's uint8 values go on as they are: the same numbers as a uint8 frame in between
    return to_rgb(resize_planes(first, sampling.frame_size, sampling.frame_size))


def video_frame(pixels: np.ndarray, sampling: VideoSampling, index: int, seconds: float, label: str) -> VideoFrame:
    """One decoded frame (uint8 [H, W, 3]) as the model's square; runs on a FrameWorkers thread."""
    square = np.ascontiguousarray(square_frame(pixels, sampling))
    return VideoFrame(
        index, seconds, RGBImage(f"{label}@{seconds:.3f}s", square.shape[1], square.shape[0], square.tobytes())
    )


def _collect(kept: list[VideoFrame], done: list[VideoFrame], total: int, progress) -> None:
    for frame in done:
        kept.append(frame)
        if progress is not None:
            progress(len(kept), total)


def _open(source, label: str):
    import av

    try:
        return av.open(source, mode="r")
    except av.error.FileNotFoundError:
        raise BadInput(f"{label}: no such video file") from None
    except (av.error.InvalidDataError, av.error.EOFError, UnicodeDecodeError):
        raise BadInput(f"{label}: not a video PyAV can read (MP4, WebM, MOV, MKV, animated GIF or WebP)") from None
    except av.error.FFmpegError as error:
        raise BadInput(f"{label}: cannot open this video ({error.strerror or error})") from None


class VideoClip:
    """An open clip: plan() reads metadata only; frames() decodes just the sampled frames."""

    def __init__(self, source: str | Path | bytes, label: str = "video bytes"):
        """A path, or the file's bytes (open_clip reads stdin)."""
        if isinstance(source, bytes):
            self.label = label
            data = source
        else:
            path = Path(source).expanduser()
            self.label = str(path)
            if not path.exists():
                raise BadInput(f"{path}: no such video file")
            if path.is_dir():
                raise BadInput(f"{path}: is a folder, not a video file")
            data = None
        if data is not None and not data:
            raise BadInput(f"{self.label}: empty video")
        self.container = _open(io.BytesIO(data) if data is not None else self.label, self.label)
        streams = self.container.streams.video
        if not streams:
            self.close()
            raise BadInput(f"{self.label}: has no video stream (audio only?); give a clip with pictures")
        self.stream = streams[0]
        self.stream.thread_type = "AUTO"

    def _frame_rate(self) -> Fraction | None:
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        return Fraction(rate) if rate else None

    def _stream_seconds(self) -> float | None:
        if self.stream.duration and self.stream.time_base:
            return float(self.stream.duration * self.stream.time_base)
        if self.container.duration:
            return self.container.duration / 1_000_000
        return None

    def plan(self, sampling: VideoSampling) -> VideoPlan:
        rate = self._frame_rate()
        total = int(self.stream.frames or 0)
        seconds = self._stream_seconds()
        if total <= 0 and rate and seconds:
            total = int(round(seconds * rate))  # containers without a frame count (WebM, MKV)
        if total <= 0:
            total = self._count_packets()  # nothing says: count the packets (demuxing only, no decoding)
        if total <= 0:
            raise BadInput(f"{self.label}: the video stream holds no frames")
        fps = float(rate) if rate else (total / seconds if seconds else 1.0)
        duration = total / fps
        indices = sample_indices(total, fps, duration, sampling.fps, sampling.max_frames)
        return VideoPlan(self.label, total, fps, duration, self.stream.width, self.stream.height, tuple(indices))

    def _count_packets(self) -> int:
        count = sum(1 for packet in self.container.demux(self.stream) if packet.size)
        self.container.seek(0)
        return count

    def frames(
        self, plan: VideoPlan, sampling: VideoSampling, progress: Callable[[int, int], None] | None = None
    ) -> list[VideoFrame]:
        """The sampled frames, decoded in one pass (seeking over long gaps), resized on worker threads meanwhile."""
        import av

        wanted = list(plan.indices)
        kept: list[VideoFrame] = []
        start = self._start_seconds()
        number = -1  # frame number in decode order; after a seek, derived from the frame's time
        position = 0
        sought = None  # the target last sought: a seek lands on the keyframe before it, decoded through from there
        decoded = 0  # frames the decoder gave, sampled or not: some but none kept means the timing is broken
        with FrameWorkers() as workers:
            try:
                decoder = self.container.decode(self.stream)
                while position < len(wanted):
                    target = wanted[position]
                    if target != sought and (target - max(number, 0)) / plan.fps > SEEK_AHEAD_SECONDS:
                        decoder = self._seek(target / plan.fps + start)
                        sought, number = target, None
                    frame = next(decoder, None)
                    if frame is None:
                        break
                    decoded += 1
                    seconds = self._seconds(frame, start)
                    number = number + 1 if number is not None else int(round(seconds * plan.fps))
                    while position < len(wanted) and number >= wanted[position]:
                        pixels = frame.to_ndarray(format="rgb24")
                        done = workers.submit(video_frame, pixels, sampling, wanted[position], seconds, self.label)
                        _collect(kept, done, len(wanted), progress)
                        position += 1
            except av.error.FFmpegError as error:
                raise BadInput(f"{self.label}: damaged or truncated video ({error.strerror or error})") from None
            _collect(kept, workers.finish(), len(wanted), progress)
        if not kept and decoded:
            # frames decode, but their timestamps are far apart (0 s, 1 s, then 277 h): the clip's timing is broken
            raise BadInput(
                f"{self.label}: {decoded} frames decoded but none at the sampled times: its timestamps span"
                f" {_duration_text(plan.duration)} with gaps, so it cannot be sampled evenly; re-encode it at a"
                " constant frame rate (ffmpeg -i IN -r 30 OUT.mp4)"
            )
        if not kept:
            raise BadInput(f"{self.label}: no frame could be decoded (damaged or truncated video?)")
        return kept

    def _start_seconds(self) -> float:
        if self.stream.start_time is not None and self.stream.time_base:
            return float(self.stream.start_time * self.stream.time_base)
        return 0.0

    def _seconds(self, frame, start: float) -> float:
        if frame.pts is None or frame.time_base is None:
            return float(frame.time or 0.0) - start
        return float(Fraction(frame.pts) * frame.time_base) - start

    def _seek(self, seconds: float):
        pts = int(seconds / self.stream.time_base) if self.stream.time_base else 0
        self.container.seek(max(pts, 0), stream=self.stream, backward=True, any_frame=False)
        return self.container.decode(self.stream)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoClip":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameProgress:
    """'frame i of N, ETA' on stderr, once the frames have taken more than a second."""

    def __init__(self, report: Callable[[str], None], label: str = "frame", after_seconds: float = 1.0):
        self.report, self.label, self.after = report, label, after_seconds
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.started
        if elapsed < self.after:
            return
        eta = elapsed / done * (total - done)
        self.report(f"{self.label} {done} of {total}, {elapsed:.1f} s, about {eta:.0f} s left")


class AnimatedImageClip:
    """An animated WebP through Pillow (FFmpeg's WebP decoder reads still images only): the same plan and frames."""

    def __init__(self, data: bytes, label: str):
        self.label = label
        try:
            self.image = Image.open(io.BytesIO(data))
            self.image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise BadInput(f"{label}: damaged or truncated animated image ({error})") from None
        count = int(getattr(self.image, "n_frames", 1))
        self.starts: list[float] = []  # each frame's start time, from its own display duration
        clock = 0.0
        for number in range(count):
            self.image.seek(number)
            self.starts.append(clock)
            clock += (self.image.info.get("duration") or 100) / 1000
        self.seconds = clock

    def plan(self, sampling: VideoSampling) -> VideoPlan:
        total = len(self.starts)
        fps = total / self.seconds if self.seconds else 10.0
        duration = total / fps
        indices = sample_indices(total, fps, duration, sampling.fps, sampling.max_frames)
        return VideoPlan(self.label, total, fps, duration, self.image.width, self.image.height, tuple(indices))

    def frames(self, plan: VideoPlan, sampling: VideoSampling, progress=None) -> list[VideoFrame]:
        kept: list[VideoFrame] = []
        with FrameWorkers() as workers:
            for number in plan.indices:
                self.image.seek(number)
                pixels = np.asarray(self.image.convert("RGB"))
                done = workers.submit(video_frame, pixels, sampling, number, self.starts[number], self.label)
                _collect(kept, done, plan.n_frames, progress)
            _collect(kept, workers.finish(), plan.n_frames, progress)
        return kept

    def close(self) -> None:
        self.image.close()

    def __enter__(self) -> "AnimatedImageClip":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _duration_text(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_clip(source) -> "VideoClip | AnimatedImageClip":
    """A clip from a path, '-' (stdin) or bytes; animated WebP goes through Pillow, everything else PyAV."""
    if isinstance(source, (bytes, bytearray, memoryview)) or str(source) == STDIN:
        data = bytes(source) if not isinstance(source, str) else sys.stdin.buffer.read()
        label = "stdin" if isinstance(source, str) else "video bytes"
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return AnimatedImageClip(data, label)
        return VideoClip(data, label)
    path = Path(source).expanduser()
    if _is_fifo(path):
        # PyAV would open a named pipe and wait forever for a writer; images give up after a while, so do clips
        try:
            return open_clip(read_path(path, MAX_CLIP_BYTES, FIFO_WAIT_SECONDS))
        except NoWriter:
            raise BadInput(
                f"{path}: a named pipe that nothing wrote to within {FIFO_WAIT_SECONDS:g} s; write the clip into it"
                " first, or give the file itself"
            ) from None
        except TooLarge:
            raise BadInput(
                f"{path}: more than {MAX_CLIP_BYTES >> 20} MiB came through this pipe; give the file"
            ) from None
    if path.is_file():
        with open(path, "rb") as file:
            head = file.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return AnimatedImageClip(path.read_bytes(), str(path))
    return VideoClip(path)
