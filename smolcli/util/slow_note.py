"""A note on stderr for work that may take a while, said only when it does.

Quick work stays silent (a pipeline's stderr keeps what matters); work that outlasts the delay says once what is
going on, so a first run that builds something for minutes does not look hung.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

PROGRESS_AFTER_VARIABLE = "SMOLCLI_PROGRESS_AFTER_S"  # tests set it to 0 to see every note at once


def progress_after_seconds(default: float) -> float:
    """How long work goes on before progress is shown: SMOLCLI_PROGRESS_AFTER_S, else `default`."""
    value = os.environ.get(PROGRESS_AFTER_VARIABLE, "")
    try:
        return max(0.0, float(value)) if value.strip() else default
    except ValueError:
        return default


@contextmanager
def note_if_slow(message: str, default_after_s: float) -> Iterator[None]:
    """Print `message` on stderr once if the block is still running after the delay (progress_after_seconds)."""
    timer = threading.Timer(
        progress_after_seconds(default_after_s), lambda: print(message, file=sys.stderr, flush=True)
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
