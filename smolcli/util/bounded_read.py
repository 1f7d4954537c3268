"""Read a file, a pipe or stdin up to a byte limit, and never wait forever on a pipe nobody writes to."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


class TooLarge(Exception):
    """More than `limit` bytes were offered."""


class NoWriter(Exception):
    """A FIFO that nothing wrote to within the wait."""


def read_stream(stream: BinaryIO, limit: int) -> bytes:
    """At most `limit` bytes of `stream`; TooLarge as soon as there are more (so /dev/zero ends)."""
    parts, total = [], 0
    while True:
        piece = stream.read(min(CHUNK, limit + 1 - total))
        if not piece:
            return b"".join(parts)
        parts.append(piece)
        total += len(piece)
        if total > limit:
            raise TooLarge(limit)


def read_path(path: Path, limit: int, fifo_wait: float) -> bytes:
    """A regular file, a device or a FIFO, bounded; a FIFO opens without blocking and gets `fifo_wait` seconds
    for its first byte (open() on a FIFO with no writer would block without a word)."""
    if not stat.S_ISFIFO(os.stat(path).st_mode):
        with open(path, "rb") as handle:
            return read_stream(handle, limit)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        deadline = time.monotonic() + fifo_wait
        while True:
            try:
                first = os.read(fd, CHUNK)
            except BlockingIOError:  # a writer is there but has not written yet
                first = None
            if first:
                break
            # b"": no writer yet (or one that closed without writing); None: nothing written yet
            if time.monotonic() > deadline:
                raise NoWriter(fifo_wait)
            time.sleep(0.02)
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as handle:
            if len(first) > limit:
                raise TooLarge(limit)
            return first + read_stream(handle, limit - len(first))
    finally:
        os.close(fd)
