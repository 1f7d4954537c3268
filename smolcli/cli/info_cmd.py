"""`smolcli info`: what a GGUF language model or mmproj holds, and whether a pair fits together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from smolcli.api.describe import build_report
from smolcli.api.resolve import model_paths
from smolcli.cli.output import progress
from smolcli.util.units import count_text, size_text

LABELS = {
    "architecture": "architecture",
    "name": "name",
    "parameters": "parameters",
    "tensor_types": "tensor types",
    "context_length": "context length",
    "embedding_length": "embedding length",
    "layers": "layers",
    "heads": "attention heads",
    "kv_heads": "KV heads",
    "vocab_size": "vocabulary",
    "chat_template": "chat template",
    "projector_type": "projector type",
    "image_size": "image size",
    "patch_size": "patch size",
    "scale_factor": "scale factor",
    "projection_dim": "projection dim",
    "vision_embedding_length": "vision width",
    "vision_layers": "vision layers",
    "video_sampling": "video sampling",
    "adapter_type": "adapter type",
    "rank": "rank",
    "alpha": "alpha",
    "rslora": "rsLoRA",
    "modules": "modules",
    "base_model": "base model",
    "merged_mmproj": "merged mmproj",
}


def _value_text(key: str, value) -> str:
    if key == "video_sampling" and value is None:
        return "not in the file (clips: the releases' 1 fps, at most 64 frames)"
    if value is None:
        return "unknown"
    if key == "parameters":
        return f"{count_text(value)} ({value:,})"
    if key == "video_sampling":
        size = f", frames to {value['size']} px" if value.get("size") else ""
        return f"{value['fps']:g} fps, at most {value['max_frames']} frames{size}"
    if key == "tensor_types":
        return ", ".join(f"{name} x{count}" for name, count in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def report_lines(report: dict) -> list[str]:
    lines = []
    for part in ("model", "mmproj", "adapter"):
        described = report.get(part)
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
    elif report.get("adapter") is not None:
        lines.append("adapter: apply it to its base with --lora FILE[:SCALE] (ask, chat) or load(..., lora=[...])")
    elif report["model"] is not None:
        lines.append("pair: no mmproj-*.gguf beside the model (images need one; pass it with --mmproj)")
    return lines


def info(
    path: Annotated[
        str,
        typer.Argument(
            help="A .gguf language model or mmproj, a folder holding a converted pair, or a model name or repo id."
        ),
    ],
    mmproj: Annotated[
        Optional[Path],
        typer.Option(
            "--mmproj", help="The vision file to check against the model (default: the mmproj-*.gguf beside it)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Never touch the network: a model name must already be in the local store."),
    ] = False,
) -> None:
    """Show a GGUF file's architecture, size, parameters, quant types and dimensions, and whether model and mmproj fit.

    Examples:

      smolcli info SmolVLM-256M-Instruct-Q4_K_M.gguf

      smolcli info models/ --json

      smolcli info model.gguf --mmproj mmproj-model-F16.gguf

      smolcli info smolvlm-256m
    """
    report = build_report(*model_paths(path, mmproj, offline, report=progress))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo("\n".join(report_lines(report)))
