"""`smolcli info`: what a GGUF language model or mmproj holds, and whether a pair fits together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from smolcli.util.units import count_text, size_text
from smolcli.errors import SmolcliError
from smolcli.runtime.gguf_file import GGUFSummary, read_gguf
from smolcli.runtime.model_files import fit_problem, mmproj_beside


def _vocab_size(summary: GGUFSummary) -> int | None:
    size = summary.metadata.get(f"{summary.architecture}.vocab_size")
    if size is not None:
        return int(size)
    # files from other converters may carry no vocab_size key: count the token list instead
    return summary.array_lengths.get("tokenizer.ggml.tokens")


def describe_model(summary: GGUFSummary) -> dict:
    meta, arch = summary.metadata, summary.architecture
    return {
        "kind": "model",
        "path": str(summary.path),
        "size": summary.size,
        "architecture": arch,
        "name": meta.get("general.name"),
        "parameters": summary.parameters,
        "tensor_types": dict(sorted(summary.tensor_types.items(), key=lambda item: -item[1])),
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
        "kind": "mmproj",
        "path": str(summary.path),
        "size": summary.size,
        "architecture": summary.architecture,
        "name": meta.get("general.name"),
        "parameters": summary.parameters,
        "tensor_types": dict(sorted(summary.tensor_types.items(), key=lambda item: -item[1])),
        "projector_type": meta.get("clip.projector_type"),
        "image_size": meta.get("clip.vision.image_size"),
        "patch_size": meta.get("clip.vision.patch_size"),
        "scale_factor": meta.get("clip.vision.projector.scale_factor"),
        "projection_dim": summary.projection_dim,
        "vision_embedding_length": meta.get("clip.vision.embedding_length"),
        "vision_layers": meta.get("clip.vision.block_count"),
    }


def _read_mmproj(path: Path) -> GGUFSummary:
    summary = read_gguf(path)
    if summary.kind != "mmproj":
        raise SmolcliError(f"{path}: is a language model, not an mmproj (vision) file; pass the mmproj-*.gguf with --mmproj")
    return summary


def _files_in_folder(folder: Path) -> tuple[Path, bool]:
    """The one file to describe in a folder, and whether it is a language model."""
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise SmolcliError(f"{folder}: no .gguf files in this folder; convert a checkpoint with `smolcli convert` or give a file")
    models = [p for p in ggufs if not p.name.startswith("mmproj-")]
    if len(models) > 1:
        raise SmolcliError(
            f"{folder}: several language models ({', '.join(p.name for p in models)}); give one: smolcli info {models[0]}"
        )
    if models:
        return models[0], True
    if len(ggufs) > 1:
        raise SmolcliError(f"{folder}: only mmproj files ({', '.join(p.name for p in ggufs)}); give one of them")
    return ggufs[0], False


def build_report(path: Path, mmproj: Path | None = None) -> dict:
    """The report for a file or folder: {"model": ..., "mmproj": ..., "fits": ..., "fit_problem": ...}."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SmolcliError(f"{path}: no such file or folder; give a .gguf file or the folder holding a converted pair")
    if path.is_dir():
        path, _ = _files_in_folder(path)
    summary = read_gguf(path)
    if summary.kind == "mmproj":
        if mmproj is not None:
            raise SmolcliError(f"{path}: is an mmproj file; give the language model first and this with --mmproj")
        return {"model": None, "mmproj": describe_mmproj(summary), "fits": None, "fit_problem": None}
    mmproj_path = Path(mmproj).expanduser() if mmproj is not None else mmproj_beside(path)
    if mmproj_path is None:
        return {"model": describe_model(summary), "mmproj": None, "fits": None, "fit_problem": None}
    projector = _read_mmproj(mmproj_path)
    problem = fit_problem(summary, projector)
    return {"model": describe_model(summary), "mmproj": describe_mmproj(projector), "fits": problem is None, "fit_problem": problem}


LABELS = {
    "architecture": "architecture", "name": "name", "parameters": "parameters", "tensor_types": "tensor types",
    "context_length": "context length", "embedding_length": "embedding length", "layers": "layers",
    "heads": "attention heads", "kv_heads": "KV heads", "vocab_size": "vocabulary", "chat_template": "chat template",
    "projector_type": "projector type", "image_size": "image size", "patch_size": "patch size",
    "scale_factor": "scale factor", "projection_dim": "projection dim",
    "vision_embedding_length": "vision width", "vision_layers": "vision layers",
}


def _value_text(key: str, value) -> str:
    if value is None:
        return "unknown"
    if key == "parameters":
        return f"{count_text(value)} ({value:,})"
    if key == "tensor_types":
        return ", ".join(f"{name} x{count}" for name, count in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def report_lines(report: dict) -> list[str]:
    lines = []
    for part in ("model", "mmproj"):
        described = report[part]
        if described is None:
            continue
        lines.append(f"{part}: {described['path']} ({size_text(described['size'])})")
        for key, label in LABELS.items():
            if key in described:
                lines.append(f"  {label:<18}{_value_text(key, described[key])}")
    if report["fits"] is True:
        lines.append("pair: fits (the mmproj projects to the model's embedding length)")
    elif report["fits"] is False:
        lines.append(f"pair: does NOT fit: {report['fit_problem']}")
    elif report["model"] is not None:
        lines.append("pair: no mmproj-*.gguf beside the model (images need one; pass it with --mmproj)")
    return lines


def resolve_target(text: str, mmproj: Path | None, offline: bool) -> tuple[Path, Path | None]:
    """A path as given, or a model name's stored pair (pulled on first use, as -m does for ask)."""
    from smolcli.cli.output import progress
    from smolcli.store.model_ref import parse_model_ref
    from smolcli.store.pull import stored_or_pulled
    from smolcli.store.model_store import ModelStore

    ref = parse_model_ref(text)
    if isinstance(ref, Path):
        return ref, mmproj
    store = ModelStore()
    entry = stored_or_pulled(ref, offline, progress, store)
    return store.model_path(entry), mmproj or store.mmproj_path(entry)


def info(
    path: Annotated[str, typer.Argument(help="A .gguf language model or mmproj, a folder holding a converted pair, or a model name or repo id.")],
    mmproj: Annotated[Optional[Path], typer.Option("--mmproj", help="The vision file to check against the model (default: the mmproj-*.gguf beside it).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network: a model name must already be in the local store.")] = False,
) -> None:
    """Show a GGUF file's architecture, size, parameters, quant types and dimensions, and whether model and mmproj fit.

    Examples:

      smolcli info SmolVLM-256M-Instruct-Q4_K_M.gguf

      smolcli info models/ --json

      smolcli info model.gguf --mmproj mmproj-model-F16.gguf

      smolcli info smolvlm-256m
    """
    report = build_report(*resolve_target(path, mmproj, offline))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo("\n".join(report_lines(report)))
