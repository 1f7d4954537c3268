"""Where smolcli keeps files it builds for itself: $SMOLCLI_HOME, else the platform's user cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
