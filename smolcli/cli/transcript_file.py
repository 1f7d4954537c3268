"""Chat transcripts on disk, written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from smolcli.errors import SmolcliError


def save_transcript(transcript: dict, path: Path) -> None:
    """Write to a temporary file beside the target, then rename: a crash never leaves half a file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise SmolcliError(f"{path}: is a folder; give a file name, e.g. /save chat.json")
    if not path.parent.is_dir():
        raise SmolcliError(f"{path.parent}: no such folder")
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise SmolcliError(f"{path}: cannot write here ({error.strerror})") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(transcript, out, indent=2, ensure_ascii=False)
            out.write("\n")
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a saved chat is an ordinary file
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise SmolcliError(f"{path}: could not save the transcript ({error.strerror or error})") from None
        raise
