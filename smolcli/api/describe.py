"""What a GGUF language model or mmproj holds, and whether a pair fits together: the report `smolcli info` prints."""

from __future__ import annotations

from pathlib import Path

from smolcli.convert.lora_adapter import KEY_BASE, KEY_MMPROJ, KEY_MODULES, KEY_RANK, KEY_RSLORA
from smolcli.errors import ModelFileError
from smolcli.models.smolvlm_video import VIDEO_FPS_KEY, VIDEO_MAX_FRAMES_KEY, VIDEO_SIZE_KEY
from smolcli.runtime.gguf.gguf_file import GGUFSummary, read_gguf
from smolcli.runtime.gguf.model_files import fit_problem, mmproj_beside


def _vocab_size(summary: GGUFSummary) -> int | None:
    size = summary.metadata.get(f"{summary.architecture}.vocab_size")
    if size is not None:
        return int(size)
    # files from other converters may carry no vocab_size key: count the token list instead
    return summary.array_lengths.get("tokenizer.ggml.tokens")


def _file_facts(summary: GGUFSummary, kind: str) -> dict:
    """What every report part starts with: the file, its architecture, name, size and tensor types."""
    return {
        "kind": kind,
        "path": str(summary.path),
        "size": summary.size,
        "architecture": summary.architecture,
        "name": summary.metadata.get("general.name"),
        "parameters": summary.parameters,
        "tensor_types": dict(sorted(summary.tensor_types.items(), key=lambda item: -item[1])),
    }


def describe_model(summary: GGUFSummary) -> dict:
    meta, arch = summary.metadata, summary.architecture
    return {
        **_file_facts(summary, "model"),
        "context_length": meta.get(f"{arch}.context_length"),
        "embedding_length": summary.embedding_length,
        "layers": meta.get(f"{arch}.block_count"),
        "heads": meta.get(f"{arch}.attention.head_count"),
        "kv_heads": meta.get(f"{arch}.attention.head_count_kv"),
        "vocab_size": _vocab_size(summary),
        "chat_template": bool(meta.get("tokenizer.chat_template")),
    }


def describe_mmproj(summary: GGUFSummary) -> dict:
    meta = summary.metadata
    return {
        **_file_facts(summary, "mmproj"),
        "projector_type": meta.get("clip.projector_type"),
        "image_size": meta.get("clip.vision.image_size"),
        "patch_size": meta.get("clip.vision.patch_size"),
        "scale_factor": meta.get("clip.vision.projector.scale_factor"),
        "projection_dim": summary.projection_dim,
        "vision_embedding_length": meta.get("clip.vision.embedding_length"),
        "vision_layers": meta.get("clip.vision.block_count"),
        "video_sampling": _video_sampling(meta),
    }


def _video_sampling(meta: dict) -> dict | None:
    """The checkpoint's video sampling that convert wrote, or None (clips then take the releases' 1 fps, 64)."""
    if meta.get(VIDEO_FPS_KEY) is None:
        return None
    return {"fps": meta[VIDEO_FPS_KEY], "max_frames": meta.get(VIDEO_MAX_FRAMES_KEY), "size": meta.get(VIDEO_SIZE_KEY)}


def describe_adapter(summary: GGUFSummary) -> dict:
    """A LoRA adapter GGUF: rank, alpha and modules are smolcli's own keys (other converters' files lack them)."""
    meta = summary.metadata
    return {
        **_file_facts(summary, "adapter"),
        "adapter_type": meta.get("adapter.type"),
        "rank": meta.get(KEY_RANK),
        "alpha": meta.get("adapter.lora.alpha"),
        "rslora": meta.get(KEY_RSLORA),
        "modules": ", ".join(meta.get(KEY_MODULES) or []) or None,
        "base_model": meta.get(KEY_BASE),
        "merged_mmproj": meta.get(KEY_MMPROJ),
    }


def _read_mmproj(path: Path) -> GGUFSummary:
    summary = read_gguf(path)
    if summary.kind != "mmproj":
        raise ModelFileError(
            f"{path}: is a language model, not an mmproj (vision) file; pass the mmproj-*.gguf as {{mmproj}}"
        )
    return summary


def _files_in_folder(folder: Path) -> tuple[Path, bool]:
    """The one file to describe in a folder, and whether it is a language model."""
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelFileError(
            f"{folder}: no .gguf files in this folder; convert a checkpoint with `smolcli convert` or give a file"
        )
    models = [p for p in ggufs if not p.name.startswith("mmproj-")]
    if len(models) > 1:
        raise ModelFileError(
            f"{folder}: several language models ({', '.join(p.name for p in models)}); give one: smolcli info {models[0]}"
        )
    if models:
        return models[0], True
    if len(ggufs) > 1:
        raise ModelFileError(f"{folder}: only mmproj files ({', '.join(p.name for p in ggufs)}); give one of them")
    return ggufs[0], False


def build_report(path: Path, mmproj: Path | None = None) -> dict:
    """The report for a file or folder: {"model": ..., "mmproj": ..., "fits": ..., "fit_problem": ...}."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelFileError(
            f"{path}: no such file or folder; give a .gguf file or the folder holding a converted pair"
        )
    if path.is_dir():
        path, _ = _files_in_folder(path)
    summary = read_gguf(path)
    if summary.kind == "adapter":
        return {"model": None, "mmproj": None, "adapter": describe_adapter(summary), "fits": None, "fit_problem": None}
    if summary.kind == "mmproj":
        if mmproj is not None:
            raise ModelFileError(f"{path}: is an mmproj file; give the language model first and this as {{mmproj}}")
        return {"model": None, "mmproj": describe_mmproj(summary), "fits": None, "fit_problem": None}
    mmproj_path = Path(mmproj).expanduser() if mmproj is not None else mmproj_beside(path)
    if mmproj_path is None:
        return {"model": describe_model(summary), "mmproj": None, "fits": None, "fit_problem": None}
    projector = _read_mmproj(mmproj_path)
    problem = fit_problem(summary, projector)
    return {
        "model": describe_model(summary),
        "mmproj": describe_mmproj(projector),
        "fits": problem is None,
        "fit_problem": problem,
    }
