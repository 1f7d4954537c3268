"""Handing freed memory back to the system, so that the next phase of a run starts from a lower resident size."""

from __future__ import annotations

import ctypes
import functools
import gc


@functools.cache
def _malloc_trim():
    # the process's own symbols (CDLL(None)): glibc is already mapped. ctypes.util.find_library would start
    # `ldconfig -p` as a child, whose shared pages a process-tree memory sample counts twice.
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # no dlopen(NULL) (Windows)
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


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_blocks(threshold: int = 1 << 20) -> None:
    """Have glibc map every block of at least `threshold` bytes on its own and unmap it when freed (mallopt's
    M_MMAP_THRESHOLD, fixed for the rest of the process); elsewhere a no-op.

    By default glibc raises that threshold to the largest block freed (up to 32 MB), so after a phase frees a few
    large numpy arrays, later blocks of that size come from the heap and stay resident beside what follows: in the
    int8 build's GPTQ calibration (onnx_gptq), 60 MB of a 256M first run's peak.
    """
    try:
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    except (OSError, TypeError):
        return
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, threshold)
