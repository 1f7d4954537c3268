"""A source's frames, read on a thread into a one-frame Mailbox: cameras and streams reopened when they drop.

PyAV (FFmpeg in its wheels) reads cameras (v4l2), streams and files, as runtime.video.clip reads clips. A
live source that fails or goes silent is reopened with a growing pause, said on stderr; one that gives no
frame within the open timeout is an error. The thread owns the av container from open to close: FFmpeg's
reads are never touched from the other thread, and the read timeout bounds how long a stop waits.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from smolcli.api.batch import IMAGE_SUFFIXES
from smolcli.api.watch.mailbox import WAKE_S, Frame, Mailbox
from smolcli.api.watch.sources import CAMERA, FILE, FOLDER, Source
from smolcli.errors import BadInput, SmolcliError
from smolcli.runtime.vision.images import load_image
from smolcli.util.os_errors import os_error_text

FIRST_RETRY_S = 0.5  # the pause before reopening a dropped stream, doubled at each failure
MAX_RETRY_S = 30.0
READ_TIMEOUT_S = 5.0  # a live stream silent this long counts as dropped
FOLDER_POLL_S = 0.25
STOP_JOIN_S = 0.5  # a reader blocked in a silent stream is not waited for: it is a daemon, its read times out

Report = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


def _reason(error: Exception, waited_s: float) -> str:
    import av

    if isinstance(error, av.error.ExitError):  # PyAV's timeout interrupts FFmpeg: "Immediate exit requested"
        return f"nothing came for {waited_s:g} s"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.rstrip(".")


class FrameFeed:
    """A started source: a reader thread fills the mailbox until close() (also a context manager)."""

    def __init__(self, source: Source, realtime: bool = True, open_timeout: float = 10.0, report: Report | None = None):
        if open_timeout <= 0:
            raise BadInput(f"{{open_timeout}} must be a positive number of seconds, not {open_timeout:g}")
        self.source = source
        self.realtime = realtime
        self.open_timeout = open_timeout
        self.report = report or _quiet
        # a folder and a file read as fast as possible keep every frame; a live or paced one keeps the newest
        self.mailbox = Mailbox(lossless=source.kind == FOLDER or (source.kind == FILE and not realtime))
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._retry_s = FIRST_RETRY_S
        self._frames = 0
        self._dropped_at: float | None = None
        read = self._read_folder if source.kind == FOLDER else self._read_video
        self._thread = threading.Thread(target=self._run, args=(read,), name="smolcli watch", daemon=True)
        self._thread.start()

    # --- the taker's side ---------------------------------------------------------------------

    def wait_open(self) -> None:
        """Return once the source gives its first frame (a folder: at once); raise when it cannot be opened."""
        if self.source.kind == FOLDER:
            return
        deadline = time.monotonic() + self.open_timeout + READ_TIMEOUT_S
        while not self.mailbox.wait_ready(WAKE_S):
            if time.monotonic() > deadline:
                raise BadInput(self._unopened("no frame came"))
        if self.mailbox.ended:
            self.mailbox.take(0)  # raises the reader's error
            raise BadInput(f"{self.source.label}: holds no frame")

    def next_frame(self, timeout: float) -> Frame | None:
        return self.mailbox.take(timeout)

    @property
    def ended(self) -> bool:
        return self.mailbox.ended

    def take_skipped(self) -> int:
        return self.mailbox.take_skipped()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(STOP_JOIN_S)

    def __enter__(self) -> "FrameFeed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the reader thread ----------------------------------------------------------------------

    def _run(self, read: Callable[[], None]) -> None:
        try:
            read()
        except BaseException as error:  # noqa: BLE001 - handed to the taker, raised in its thread
            self.mailbox.finish(error)
        else:
            self.mailbox.finish()

    def _unopened(self, reason: str) -> str:
        what = "the camera" if self.source.kind == CAMERA else "the stream"
        return (
            f"{self.source.label}: cannot open {what} ({reason}) within {self.open_timeout:g} s; check the address "
            "and that it is on, or wait longer with {open_timeout}"
        )

    def _read_video(self) -> None:
        import av

        label = self.source.label
        while not self._stop.is_set():
            try:
                container = self.source.open_container(self.open_timeout, READ_TIMEOUT_S)
            except av.error.FFmpegError as error:
                reason = _reason(error, self.open_timeout)
            else:
                try:
                    reason = self._decode(container)
                finally:
                    container.close()
                if reason is None:
                    return  # a file's end, or a stop
            if self._stop.is_set():
                return
            if not self.source.live:
                raise BadInput(f"{label}: cannot read this video ({reason}); give MP4, WebM, MOV or MKV")
            if self._frames == 0:
                if time.monotonic() - self.started + self._retry_s >= self.open_timeout:
                    raise BadInput(self._unopened(reason))
            else:
                self._dropped_at = self._dropped_at or time.monotonic()
                self.report(f"{label}: stream dropped ({reason}); reopening in {self._retry_s:g} s")
            if self._stop.wait(self._retry_s):
                return
            self._retry_s = min(2 * self._retry_s, MAX_RETRY_S)

    def _decode(self, container) -> str | None:
        """Frames into the mailbox until the end (None) or a failure of a live source (its reason)."""
        import av

        if not container.streams.video:
            raise BadInput(f"{self.source.label}: has no video stream (audio only?); give one with pictures")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
        paced_from = None  # the monotonic time a paced file's 0 s falls on
        try:
            for frame in container.decode(stream):
                if self._stop.is_set():
                    return None
                if self.source.live:
                    seconds = time.monotonic() - self.started
                else:
                    seconds = max(0.0, float(frame.time) - start) if frame.time is not None else 0.0
                    if paced_from is not None and self._stop.wait(max(0.0, paced_from + seconds - time.monotonic())):
                        return None
                pixels = frame.to_ndarray(format="rgb24")
                self._arrived(stream)
                self.mailbox.put(Frame(round(seconds, 3), pixels), self._stop)
                if self.realtime and not self.source.live and paced_from is None:
                    # a paced file's clock starts when its first frame is taken, not while the model still loads
                    self.mailbox.wait_taken(self._stop)
                    paced_from = time.monotonic() - seconds
        except av.error.FFmpegError as error:
            if not self.source.live:
                raise BadInput(
                    f"{self.source.label}: cannot read this video ({_reason(error, READ_TIMEOUT_S)})"
                ) from None
            return _reason(error, READ_TIMEOUT_S)
        return "the stream ended" if self.source.live else None

    def _arrived(self, stream) -> None:
        if self._frames == 0:
            codec = stream.codec_context.name
            self.report(f"{self.source.label}: open, {stream.width}x{stream.height} {codec}")
        elif self._dropped_at is not None:
            self.report(f"{self.source.label}: stream back after {time.monotonic() - self._dropped_at:.1f} s")
            self._dropped_at = None
            self._retry_s = FIRST_RETRY_S
        self._frames += 1

    def _read_folder(self) -> None:
        folder = Path(self.source.location)
        known = set(os.listdir(folder))  # there before the watch: not new
        self.report(f"{folder}: watching for new images")
        seen: dict[str, tuple[int, int]] = {}  # a new file's size and mtime at the last look
        while not self._stop.is_set():
            for path, state in self._new_images(folder, known):
                # still being written until it looks the same twice: a half-written JPEG would fail to decode
                if state[0] == 0 or seen.get(path.name) != state:
                    seen[path.name] = state
                    continue
                known.add(path.name)
                del seen[path.name]
                self._put_image(path)
                if self._stop.is_set():
                    return
            self._stop.wait(FOLDER_POLL_S)

    @staticmethod
    def _new_images(folder: Path, known: set[str]) -> list[tuple[Path, tuple[int, int]]]:
        """The images not seen before, oldest first, each with its (size, mtime); one removed meanwhile is left out."""
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            raise BadInput(f"{folder}: the folder is gone") from None
        found = []
        for entry in entries:
            if entry.name in known or entry.name.startswith("."):
                continue
            if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                facts = entry.stat()
                if not entry.is_file():
                    continue
            except FileNotFoundError:
                continue
            found.append((facts.st_mtime_ns, entry.name, Path(entry.path), (facts.st_size, facts.st_mtime_ns)))
        return [(path, state) for _, _, path, state in sorted(found)]

    def _put_image(self, path: Path) -> None:
        import numpy as np

        try:
            image = load_image(path)
        except SmolcliError as error:
            self.report(f"{error}; skipped")  # the message names the file
            return
        except OSError as error:  # gone or unreadable between the listing and the read
            self.report(f"{os_error_text(error, str(path))}; skipped")
            return
        pixels = np.frombuffer(image.pixels, dtype=np.uint8).reshape(image.height, image.width, 3)
        self._frames += 1
        self.mailbox.put(Frame(round(time.monotonic() - self.started, 3), pixels, str(path)), self._stop)
