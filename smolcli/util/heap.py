"""Handing freed memory back to the system, so that the next phase of a run starts from a lower resident size."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def return_freed_memory() -> None:
    """Collect Python's garbage, then ask glibc to return its free heap pages (malloc_trim); elsewhere a no-op.

    glibc keeps small and mid-sized freed blocks in its heap for reuse: without the trim, what a freed ONNX
    session held stays resident while the language model loads beside it.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
