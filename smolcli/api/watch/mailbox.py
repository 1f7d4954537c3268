"""One frame between the thread that reads a source and the loop that asks about it: never a queue.

Lossy for live sources (a camera, a stream, a video file played at its own pace): a new frame replaces one
not yet taken, and the replaced ones are counted, so a slow model skips frames instead of falling behind or
holding memory. Lossless for a folder or a file read as fast as possible: the reader waits until its frame
is taken, so every image is seen.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

WAKE_S = 0.25  # waits are cut into steps this long, so a stop or a signal is noticed promptly


@dataclass(frozen=True)
class Frame:
    time_s: float  # a file's: its own timestamp; live and folder: seconds since the watch started
    pixels: np.ndarray  # uint8 [H, W, 3] RGB
    file: str | None = None  # a folder's: the image file


class Mailbox:
    def __init__(self, lossless: bool):
        self.lossless = lossless
        self._changed = threading.Condition()
        self._frame: Frame | None = None
        self._finished = False
        self._error: BaseException | None = None
        self._skipped = 0

    def put(self, frame: Frame, stop: threading.Event) -> None:
        """Hand over a frame; lossless, wait until the one before it was taken first."""
        with self._changed:
            if self.lossless:
                self._wait_empty(stop)
            if self._frame is not None:
                self._skipped += 1
            self._frame = frame
            self._changed.notify_all()

    def _wait_empty(self, stop: threading.Event) -> None:
        while self._frame is not None and not stop.is_set():
            self._changed.wait(WAKE_S)

    def wait_taken(self, stop: threading.Event) -> None:
        """Until the frame put last was taken (or a stop)."""
        with self._changed:
            self._wait_empty(stop)

    def finish(self, error: BaseException | None = None) -> None:
        """The reader is done: the source ended (error None) or failed for good (raised to the taker)."""
        with self._changed:
            self._finished = True
            self._error = error
            self._changed.notify_all()

    def _ready(self) -> bool:
        return self._frame is not None or self._finished

    def wait_ready(self, timeout: float) -> bool:
        """Until a frame waits or the reader finished; False when the timeout passed first."""
        with self._changed:
            return self._changed.wait_for(self._ready, timeout)

    def take(self, timeout: float) -> Frame | None:
        """The newest frame, or None after the timeout or once the source has ended (see `ended`)."""
        with self._changed:
            self._changed.wait_for(self._ready, timeout)
            if self._frame is not None:
                frame, self._frame = self._frame, None
                self._changed.notify_all()
                return frame
            if self._error is not None:
                raise self._error
            return None

    @property
    def ended(self) -> bool:
        with self._changed:
            return self._finished and self._frame is None

    def take_skipped(self) -> int:
        """Frames replaced before anyone took them since the last call."""
        with self._changed:
            skipped, self._skipped = self._skipped, 0
            return skipped
