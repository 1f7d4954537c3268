"""Whole files or none: write beside the target under a temporary name, then rename over it."""

from __future__ import annotations

import os
from pathlib import Path

from smolcli.util.staging import staged_file


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old bytes or the new ones, never a mix; concurrent writers each leave a whole file."""
    with staged_file(path) as temp:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
