"""What C code prints straight to file descriptor 2, caught instead of reaching the user's terminal.

llama.cpp writes some failures with fprintf(stderr) rather than through its log callback (a grammar
that does not parse is dumped whole, thousands of lines for a large schema), so no log setting keeps
them off stderr. For the length of one call, fd 2 points at a temporary file; what the call wrote is
then read back, and the caller decides what (if anything) the user sees.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()  # fd 2 is the process's: one capture at a time


class Captured:
    text: str = ""


@contextmanager
def captured_c_stderr() -> Iterator[Captured]:
    """Redirect fd 2 to a temporary file inside the block; `.text` holds what was written once it ends.

    Other threads writing to stderr meanwhile land in the capture too, so keep the block to one short call.
    """
    captured = Captured()
    with _lock, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read(1 << 20).decode("utf-8", "replace")
