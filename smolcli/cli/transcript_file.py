"""Chat transcripts on disk, written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

from smolcli.errors import SmolcliError
from smolcli.util.atomic_file import write_atomically


def save_transcript(transcript: dict, path: Path) -> None:
    """Written whole or not at all: a crash never leaves half a file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise SmolcliError(f"{path}: is a folder; give a file name, e.g. /save chat.json")
    if not path.parent.is_dir():
        raise SmolcliError(f"{path.parent}: no such folder")
    data = (json.dumps(transcript, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        write_atomically(path, data)
    except OSError as error:
        raise SmolcliError(f"{path}: could not save the transcript ({error.strerror or error})") from None
