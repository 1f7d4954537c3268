"""Folders that smolcli builds for itself (the demo, bench pairs) are whole only when their marker and GGUF files read back."""

from __future__ import annotations

import json
from pathlib import Path

from smolcli.errors import SmolcliError


def read_marker(path: Path) -> dict | None:
    """The JSON marker written last into a built folder, or None when it is missing or unreadable."""
    try:
        marker = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def ggufs_readable(*paths: Path) -> bool:
    from smolcli.runtime.gguf.gguf_file import read_gguf

    try:
        for path in paths:
            read_gguf(path)
    except SmolcliError:
        return False
    return True
