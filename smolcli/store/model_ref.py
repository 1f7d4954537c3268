"""What the user typed after -m or `pull`: a file or folder on disk, a registry name, or a Hub repo id."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from smolcli.errors import SmolcliError
from smolcli.models import registry
from smolcli.models.registry import RegisteredModel


@dataclass(frozen=True)
class ModelName:
    """A model known by name: a registry entry, or a Hub repo id the registry does not list."""

    name: str
    repo_id: str
    entry: RegisteredModel | None


def _looks_like_path(text: str) -> bool:
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    return (
        text.lower().endswith(".gguf")
        or text.startswith((".", "~"))
        or text.endswith(separators)
        or os.path.isabs(text)
        or text.count("/") > 1
        or "\\" in text
    )


def _suggestion(text: str) -> str:
    close = registry.close_names(text)
    return f"did you mean {' or '.join(close)}?" if close else "`smolcli models` lists the names"


def model_name(text: str) -> ModelName:
    """A registry name or repo id; anything else is an error that suggests close names."""
    entry = registry.find(text)
    if entry is not None:
        return ModelName(entry.name, entry.repo_id, entry)
    if registry.REPO_ID.fullmatch(text.strip()):
        return ModelName(text.strip(), text.strip(), None)
    raise SmolcliError(
        f"unknown model {text!r}: not a registry name or a Hub repo id (owner/name); {_suggestion(text)}"
    )


def parse_model_ref(text: str) -> Path | ModelName:
    """A path when something is there or it reads like one; otherwise a model name."""
    path = Path(text).expanduser()
    if path.exists() or (_looks_like_path(text) and registry.find(text) is None):
        return path
    if registry.find(text) is None and not registry.REPO_ID.fullmatch(text.strip()):
        raise SmolcliError(f"{text}: no such file or folder, nor a known model name; {_suggestion(text)}")
    return model_name(text)
