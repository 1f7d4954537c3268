"""`smolcli doctor`: what this machine and this llama.cpp build can do, and how to get GPU offload."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from smolcli.doctor.install_commands import Advice, advise
from smolcli.doctor.system_info import SystemInfo, collect
from smolcli.util.units import size_text


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def report_lines(info: SystemInfo, advice: Advice) -> list[str]:
    width = 20
    lines = ["versions:"]
    for name, version in info.versions.items():
        suffix = f" ({info.python_executable})" if name == "python" else ""
        lines.append(f"  {name:<{width - 2}}{version}{suffix}")
    lines.append(f"{'platform':<{width}}{info.platform} ({info.machine})")
    lines.append(f"{'RAM':<{width}}{size_text(info.ram_total)} total, {size_text(info.ram_available)} available")
    lines.append(f"{'ggml backends':<{width}}{', '.join(info.backends) or 'none found'}")
    lines.append("devices:")
    for device in info.devices or []:
        memory = f", {size_text(device.memory_total)}" if device.memory_total else ""
        lines.append(f"  {device.name:<{width - 2}}{device.description} ({device.type}{memory})")
    if not info.devices:
        lines.append("  (the device registry could not be read)")
    lines.append(f"{'GPU offload':<{width}}{_yes_no(info.gpu_offload)}")
    jetson = f"yes ({info.jetson_model})" if info.jetson and info.jetson_model else _yes_no(info.jetson)
    lines.append(f"{'Jetson':<{width}}{jetson}")
    lines.append(f"{'nvcc':<{width}}{info.nvcc or 'not found'}")
    lines.append(f"{'CUDA_HOME':<{width}}{info.cuda_home or 'not set'}")
    lines.append(f"{'nvidia-smi':<{width}}{info.nvidia_smi or 'not found'}")
    lines.append(f"{'NVIDIA driver':<{width}}{info.nvidia_driver or 'not loaded'}")
    lines.append(f"{'llama.cpp features':<{width}}{info.llama_system_info}")
    lines.extend(vision_engine_lines(info, width))
    lines.append("")
    lines.append(f"advice: {advice.summary}")
    if advice.command:
        lines.append(f"  run in the environment smolcli is installed in ({info.python_executable}):")
        lines.append(f"  {advice.command}")
    lines.extend(f"  note: {note}" for note in advice.notes)
    return lines


def vision_engine_lines(info: SystemInfo, width: int) -> list[str]:
    """Which encoder --vision-engine auto picks on the CPU, and the CPU features ONNX Runtime's kernels use."""
    if info.onnxruntime:
        engine = f"onnxruntime {info.onnxruntime}: auto encodes images with it when the encoder runs on the CPU"
    else:
        engine = "onnxruntime not installed: auto uses mtmd (pip install onnxruntime onnx)"
    if info.cpu_features is None:
        features = "could not be read on this system"
    else:
        features = ", ".join(f"{name} {_yes_no(present)}" for name, present in info.cpu_features.items())
    return [f"{'vision engine':<{width}}{engine}", f"{'ORT CPU features':<{width}}{features}"]


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Show versions, the llama.cpp build's backends and devices, RAM, Jetson and CUDA, and the reinstall that enables the GPU.

    Examples:

      smolcli doctor

      smolcli doctor --json | jq .advice.command
    """
    from smolcli.runtime.llama import llama_logging

    llama_logging.configure(False)
    info = collect()
    advice = advise(info.facts())
    if as_json:
        typer.echo(json.dumps({**info.to_dict(), "advice": asdict(advice)}, indent=2))
        return
    typer.echo("\n".join(report_lines(info, advice)))
