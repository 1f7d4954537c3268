"""Hugging Face SmolVLM checkpoint -> (language model GGUF, mmproj GGUF), without torch."""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from smolcli.convert.adapter_folder import open_adapter
from smolcli.convert.checkpoint import open_checkpoint
from smolcli.convert.gguf_out import FLOAT_TYPES, QType
from smolcli.convert.lora_merge import merged_checkpoint
from smolcli.convert.mmproj import MMPROJ_TYPES, write_mmproj
from smolcli.convert.quantize import DEFAULT_QUANT, QUANT_TYPES, fallbacks, parse_quant, quantize, tensor_types
from smolcli.convert.text_model import write_text_model
from smolcli.convert.vocab import load_vocabulary
from smolcli.errors import BadInput
from smolcli.util.staging import stage_beside

DEFAULT_MMPROJ_TYPE = "F16"
LOSSLESS_INTERMEDIATE = {"BF16": QType.BF16, "F16": QType.F16}
STAGE_PREFIX = ".smolcli-convert-"

__all__ = ["ConversionResult", "convert_checkpoint", "output_paths", "QUANT_TYPES", "MMPROJ_TYPES"]


@dataclass
class ConversionResult:
    model: Path
    mmproj: Path
    type_counts: Counter = field(default_factory=Counter)
    fallbacks: dict[str, str] = field(default_factory=dict)


def output_paths(outdir: Path, name: str, quant: str, mmproj_type: str) -> tuple[Path, Path]:
    return outdir / f"{name}-{quant}.gguf", outdir / f"mmproj-{name}-{mmproj_type}.gguf"


def convert_checkpoint(
    source: Path,
    outdir: Path | None = None,
    quant: str = DEFAULT_QUANT,
    mmproj_type: str = DEFAULT_MMPROJ_TYPE,
    name: str | None = None,
    report: Callable[[str], None] = lambda message: None,
    threads: int | None = None,
    adapter: Path | None = None,
    adapter_scale: float = 1.0,
    adapter_name: str | None = None,
) -> ConversionResult:
    """Write NAME-QUANT.gguf and mmproj-NAME-TYPE.gguf; with `adapter` (a PEFT folder), the merged pair."""
    quant = parse_quant(quant, QUANT_TYPES, "quant type")
    mmproj_type = parse_quant(mmproj_type, MMPROJ_TYPES, "mmproj type")
    checkpoint = open_checkpoint(Path(source))
    vocabulary = load_vocabulary(checkpoint.root, checkpoint.family, checkpoint.text["vocab_size"])
    name = name or Path(source).resolve().name
    if adapter is not None:
        if not math.isfinite(adapter_scale):
            raise BadInput(f"{{adapter_scale}} must be a finite number, not {adapter_scale}")
        opened = open_adapter(Path(adapter), checkpoint, adapter_name)
        checkpoint = merged_checkpoint(checkpoint, opened, adapter_scale)
        name = f"{name}-{opened.name}" + (f"-x{adapter_scale:g}" if adapter_scale != 1.0 else "")
        report(
            f"merging adapter {opened.root} ({len(opened.modules)} LoRA modules"
            f"{', DoRA' if opened.is_dora else ''}, {len(opened.replaced)} replaced tensors) in float32"
        )
    outdir = Path(outdir) if outdir is not None else Path.cwd()
    outdir.mkdir(parents=True, exist_ok=True)
    model_path, mmproj_path = output_paths(outdir, name, quant, mmproj_type)
    report(f"converting {checkpoint.generation} checkpoint {checkpoint.root} ({checkpoint.source_dtype} weights)")

    # a hidden folder beside the outputs: files are renamed out of it only when complete
    with stage_beside(model_path, STAGE_PREFIX) as stage:
        staged_mmproj, staged_model = stage / "mmproj.gguf", stage / "model.gguf"
        write_mmproj(checkpoint, staged_mmproj, MMPROJ_TYPES[mmproj_type], name, report, mmproj_path.name)
        if quant in FLOAT_TYPES:
            write_text_model(checkpoint, vocabulary, staged_model, FLOAT_TYPES[quant], name, report, model_path.name)
        else:
            # merged weights are float32: rounding them to 16 bits before quantizing would round twice
            source_dtype = "F32" if adapter is not None else checkpoint.source_dtype
            intermediate = LOSSLESS_INTERMEDIATE.get(source_dtype, QType.F32)
            staged_float = stage / "float.gguf"
            write_text_model(
                checkpoint,
                vocabulary,
                staged_float,
                intermediate,
                name,
                report,
                f"{model_path.name} ({intermediate.name} first)",
            )
            report(f"  quantizing to {quant} with llama.cpp")
            quantize(staged_float, staged_model, quant, threads)
            staged_float.unlink()
        types = tensor_types(staged_model)
        os.replace(staged_mmproj, mmproj_path)
        os.replace(staged_model, model_path)

    result = ConversionResult(model_path, mmproj_path, Counter(t for t, _ in types.values()), fallbacks(types, quant))
    report(summary(result))
    return result


def summary(result: ConversionResult) -> str:
    counts = ", ".join(f"{qtype} x{n}" for qtype, n in result.type_counts.most_common())
    lines = [f"model tensors: {counts}"]
    if result.fallbacks:
        by_type = Counter(result.fallbacks.values())
        lines.append(
            f"{len(result.fallbacks)} tensors have rows that are not a multiple of 256 and fell back to "
            + ", ".join(f"{qtype} ({n})" for qtype, n in by_type.most_common())
            + f": {', '.join(sorted(result.fallbacks)[:4])}{' ...' if len(result.fallbacks) > 4 else ''}"
        )
    return "\n".join(lines)
