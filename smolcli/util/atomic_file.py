"""Whole files or none: write beside the target under a temporary name, then rename over it."""

from __future__ import annotations

import os
from pathlib import Path

from smolcli.util.staging import staged_file


def write_atomically(path: Path, data: bytes, *more: bytes) -> None:
    """Readers see the old bytes or the new ones, never a mix; concurrent writers each leave a whole file.
    more: further parts written after data (a header and a large payload, without joining them in memory)."""
    with staged_file(path) as temp:
        with open(temp, "wb") as handle:
            for part in (data, *more):
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
