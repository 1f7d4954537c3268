"""Where smolcli keeps files it builds for itself: $SMOLCLI_HOME, else the platform's user cache folder."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Iterable

HOME_ENV = "SMOLCLI_HOME"


def cache_dir() -> Path:
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "smolcli"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else Path.home() / "AppData" / "Local") / "smolcli" / "Cache"
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "smolcli"


def size_on_disk(path: Path) -> int:
    """A file's bytes, or every file's under a folder."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def remove_all(paths: Iterable[Path]) -> tuple[int, int]:
    """Remove these files and folders: (how many, bytes freed); one that cannot be removed is left as it is."""
    removed = freed = 0
    for path in paths:
        try:
            size = size_on_disk(path)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed += 1
        freed += size
    return removed, freed
