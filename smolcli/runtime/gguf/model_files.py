"""Find a language model and its mmproj from what the user typed, and check that they fit together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smolcli.errors import ModelFileError
from smolcli.runtime.gguf.gguf_file import GGUFSummary, read_gguf


@dataclass(frozen=True)
class ModelFiles:
    model: GGUFSummary
    mmproj: GGUFSummary | None


def _base_name(model: Path) -> str:
    """'SmolVLM-256M-Q4_K_M.gguf' -> 'SmolVLM-256M' (the converter's NAME-QUANT naming)."""
    stem = model.stem
    return stem.rsplit("-", 1)[0] if "-" in stem else stem


def mmproj_beside(model: Path) -> Path | None:
    candidates = sorted(model.parent.glob("mmproj-*.gguf"))
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    named = [c for c in candidates if c.name.startswith(f"mmproj-{_base_name(model)}-")]
    if len(named) == 1:
        return named[0]
    raise ModelFileError(
        f"{model.parent}: several mmproj files ({', '.join(c.name for c in candidates)}); choose one with {{mmproj}}"
    )


def _pair_in_folder(folder: Path) -> tuple[Path, Path | None]:
    ggufs = sorted(folder.glob("*.gguf"))
    models = [p for p in ggufs if not p.name.startswith("mmproj-") and "-LoRA-" not in p.name]
    if len(models) != 1:
        found = ", ".join(p.name for p in models) or "none"
        raise ModelFileError(
            f"{folder}: expected one language-model GGUF, found {found}; pass the file itself as {{model}}"
        )
    return models[0], mmproj_beside(models[0])


def resolve_model_files(model: str | Path, mmproj: Path | None = None, need_mmproj: bool = True) -> ModelFiles:
    path = Path(model).expanduser()
    if path.is_dir():
        model_path, found = _pair_in_folder(path)
    elif path.is_file():
        model_path, found = path, None
    else:
        raise ModelFileError(
            f"{model}: no such model file or folder; give a converted .gguf or the folder holding the pair"
        )
    mmproj_path = Path(mmproj).expanduser() if mmproj else (found or mmproj_beside(model_path))

    summary = read_gguf(model_path)
    if summary.kind == "adapter":
        raise ModelFileError(
            f"{model_path}: is a LoRA adapter; give its base model as {{model}} and this file with {{lora}}"
        )
    if summary.kind != "model":
        raise ModelFileError(
            f"{model_path}: is an mmproj (vision) file; give the language model as {{model}} and this as {{mmproj}}"
        )
    if mmproj_path is None:
        if need_mmproj:
            raise ModelFileError(f"{model_path}: no mmproj-*.gguf beside it; pass the vision file as {{mmproj}}")
        return ModelFiles(summary, None)
    projector = read_gguf(mmproj_path)
    if projector.kind != "mmproj":
        raise ModelFileError(f"{mmproj_path}: is not an mmproj file (architecture {projector.architecture})")
    problem = fit_problem(summary, projector)
    if problem:
        raise ModelFileError(
            f"{mmproj_path} does not fit {model_path.name}: {problem}; use the mmproj converted with this model"
        )
    return ModelFiles(summary, projector)


def fit_problem(model: GGUFSummary, projector: GGUFSummary) -> str | None:
    """Why this mmproj cannot feed this model, or None when its image embeddings fit."""
    if projector.projection_dim != model.embedding_length:
        return f"it projects to {projector.projection_dim} but the model's embeddings are {model.embedding_length} wide"
    return None
