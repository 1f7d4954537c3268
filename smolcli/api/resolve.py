"""What a model reference means: a GGUF file, a folder holding a pair, or a name pulled into the store on first use.

The one place for it: `load()`, `smolcli ask -m`, `chat`, `info` and the demo all come through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from smolcli.runtime.gguf.model_files import ModelFiles, resolve_model_files
from smolcli.util.report import quiet

Report = Callable[[str], None]


def model_paths(
    model: str | Path, mmproj: str | Path | None = None, offline: bool = False, report: Report = quiet
) -> tuple[Path, Path | None]:
    """A path as given (with mmproj as given), or a model name's stored pair, pulled on first use."""
    from smolcli.store.model_ref import parse_model_ref
    from smolcli.store.model_store import ModelStore
    from smolcli.store.pull import stored_or_pulled

    mmproj_path = Path(mmproj).expanduser() if mmproj is not None else None
    ref = parse_model_ref(str(model))
    if isinstance(ref, Path):
        return ref, mmproj_path
    store = ModelStore()
    entry = stored_or_pulled(ref, offline, report, store)
    return store.model_path(entry), mmproj_path or store.mmproj_path(entry)


def model_files(
    model: str | Path,
    mmproj: str | Path | None = None,
    need_vision: bool = False,
    offline: bool = False,
    report: Report = quiet,
) -> ModelFiles:
    """The checked pair: the language model and its mmproj (None when there is none and none is needed)."""
    model_path, mmproj_path = model_paths(model, mmproj, offline, report)
    return resolve_model_files(model_path, mmproj_path, need_mmproj=need_vision)
