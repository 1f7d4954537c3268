"""How many CPU threads a run may ask for: one rule for ask, chat, convert, pull, demo and bench.

llama.cpp starts every thread it is given: far more threads than cores only thrash (20000 hang the
machine), and past ggml's own ceiling (GGML_MAX_N_THREADS, 512) the quantizer aborts and llama.cpp
crashes. A few threads per core still helps with hyper-threading or an affinity mask that hides some.
"""

from __future__ import annotations

import os

from smolcli.errors import BadInput

THREADS_PER_CORE = 4  # the most threads per usable core a run may ask for
GGML_MAX_THREADS = 512  # ggml.h GGML_MAX_N_THREADS


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), at least one."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def max_threads() -> int:
    return min(THREADS_PER_CORE * usable_cores(), GGML_MAX_THREADS)


def check_threads(threads: int | None) -> int | None:
    """`threads` unchanged when it is None (every core) or between 1 and max_threads(); else BadInput."""
    if threads is None:
        return None
    if threads < 1:
        raise BadInput(f"{{threads}} must be at least 1, not {threads}")
    limit = max_threads()
    if threads > limit:
        raise BadInput(
            f"{{threads={threads}}} is more than this machine can use: it has {usable_cores()} cores; "
            f"use at most {{threads={limit}}}, or leave it out for one thread per core"
        )
    return threads
