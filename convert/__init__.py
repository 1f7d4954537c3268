"""Hugging Face SmolVLM checkpoint -> (language model GGUF, mmproj GGUF), without torch."""

from __future__ import annotations

import errno
import math
import os
import shutil
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
from smolcli.errors import BadInput, DiskFull, SmolcliError
from smolcli.util.disk_full import is_disk_full
from smolcli.util.os_errors import os_error_text
from smolcli.util.staging import remove_abandoned, replace_together, stage_beside
from smolcli.util.threads import check_threads
from smolcli.util.units import size_text

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
    verbose: bool = False,
) -> ConversionResult:
    """Write NAME-QUANT.gguf and mmproj-NAME-TYPE.gguf; with `adapter` (a PEFT folder), the merged pair."""
    # every setting is checked before any work
    quant = parse_quant(quant, QUANT_TYPES, "quant type")
    mmproj_type = parse_quant(mmproj_type, MMPROJ_TYPES, "mmproj type")
    check_threads(threads)
    name = check_name(name) if name is not None else check_name(Path(source).resolve().name, given=False)
    outdir = Path(outdir) if outdir is not None else Path.cwd()
    if outdir.exists() and not outdir.is_dir():
        raise BadInput(f"{{outdir}} {outdir} is a file, not a folder; choose a folder (it is made when missing)")
    checkpoint = open_checkpoint(Path(source))
    vocabulary = load_vocabulary(checkpoint.root, checkpoint.family, checkpoint.text["vocab_size"])
    if adapter is not None:
        if not math.isfinite(adapter_scale):
            raise BadInput(f"{{adapter_scale}} must be a finite number, not {adapter_scale}")
        opened = open_adapter(Path(adapter), checkpoint, adapter_name)
        checkpoint = merged_checkpoint(checkpoint, opened, adapter_scale)
        name = check_name(f"{name}-{opened.name}" + (f"-x{adapter_scale:g}" if adapter_scale != 1.0 else ""))
        report(
            f"merging adapter {opened.root} ({len(opened.modules)} LoRA modules"
            f"{', DoRA' if opened.is_dora else ''}, {len(opened.replaced)} replaced tensors) in float32"
        )
    model_path, mmproj_path = output_paths(outdir, name, quant, mmproj_type)
    report(f"converting {checkpoint.generation} checkpoint {checkpoint.root} ({checkpoint.source_dtype} weights)")

    try:
        outdir.mkdir(parents=True, exist_ok=True)
        remove_abandoned(outdir, STAGE_PREFIX)  # stages of conversions that were killed (SIGKILL, power loss)
        # a hidden folder beside the outputs: files are renamed out of it only when complete
        with stage_beside(model_path, STAGE_PREFIX) as stage:
            staged_mmproj, staged_model = stage / "mmproj.gguf", stage / "model.gguf"
            write_mmproj(checkpoint, staged_mmproj, MMPROJ_TYPES[mmproj_type], name, report, mmproj_path.name)
            if quant in FLOAT_TYPES:
                write_text_model(
                    checkpoint, vocabulary, staged_model, FLOAT_TYPES[quant], name, report, model_path.name
                )
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
                quantize(staged_float, staged_model, quant, threads, verbose)
                staged_float.unlink()
            types = tensor_types(staged_model)
            # the two files are one pair: both replace the old pair, or neither does
            replace_together([(staged_mmproj, mmproj_path), (staged_model, model_path)], stage)
    except OSError as error:
        raise output_error(error, outdir, model_path, mmproj_path) from None

    result = ConversionResult(model_path, mmproj_path, Counter(t for t, _ in types.values()), fallbacks(types, quant))
    report(summary(result))
    return result


def output_error(error: OSError, outdir: Path, model_path: Path, mmproj_path: Path) -> SmolcliError:
    """A write that failed in the output folder, as one line naming the folder and the fix; nothing stays."""
    outputs = f"{model_path.name} and {mmproj_path.name}"
    if is_disk_full(error):
        return DiskFull(
            f"{outdir}: no space left on this disk for {outputs} ({size_text(shutil.disk_usage(outdir).free)} free); "
            "free some space or choose {outdir} on another disk; nothing was written"
        )
    if error.errno == errno.EROFS:
        return SmolcliError(f"{outdir}: read-only file system, {outputs} cannot be written; choose another {outdir}")
    return SmolcliError(f"could not write {outputs}: {os_error_text(error)}")


def check_name(name: str, given: bool = True) -> str:
    """A base name for the output files: one plain file name that stays inside the output folder."""
    fix = "give {name} a plain name such as SmolVLM-256M" if given else "name the outputs with {name}"
    what = f"{{name}} {name!r}" if given else f"the source folder's name {name!r}"
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name:
        raise BadInput(f"{what} is not a file name (no folders, no '..'); {fix}")
    if name != name.strip() or name.startswith((".", "-")) or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadInput(f"{what} starts with '.', '-' or a space, or holds a control character; {fix}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise BadInput(f"{what} is longer than {MAX_NAME_BYTES} bytes; {fix}")
    return name


# file names hold 255 bytes; the outputs add "mmproj-", "-TYPE.gguf" and a stage's own prefix
MAX_NAME_BYTES = 200


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
