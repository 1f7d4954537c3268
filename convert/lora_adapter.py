"""A PEFT LoRA adapter as a llama.cpp LoRA GGUF, applied to the base at run time (llama_adapter_lora_init).

llama.cpp adds scale * alpha / rank * B @ (A @ x) to each adapted layer, with one alpha per file and the
rank read from each B. PEFT's own scaling may differ per module (rsLoRA's alpha / sqrt(r), rank_pattern,
alpha_pattern): the ratio is folded into B, so the file computes what PEFT computes. Tensor names are
the language model's (text_model.py's table) and B's rows take the same rotary reordering as Q and K.

mtmd applies no LoRA to the vision encoder: an adapter with vision or connector tensors gets the merged
mmproj written beside it (named in the adapter's metadata), since a runtime LoRA there is impossible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from smolcli.convert.adapter_folder import Adapter, LoraModule, open_adapter
from smolcli.convert.checkpoint import Checkpoint, gguf_name, open_checkpoint
from smolcli.convert.gguf_out import PlannedTensor, QType, encode, tensor_qtype, write_gguf
from smolcli.convert.lora_merge import merged_checkpoint
from smolcli.convert.mmproj import MMPROJ_TYPES, write_mmproj
from smolcli.convert.quantize import parse_quant
from smolcli.convert.safetensors_file import to_float32
from smolcli.convert.text_model import rotary_interleave
from smolcli.errors import BadInput
from smolcli.util.staging import stage_beside

ADAPTER_TYPES = {"F32": QType.F32, "F16": QType.F16, "Q8_0": QType.Q8_0}
DEFAULT_ADAPTER_TYPE = "F16"
STAGE_PREFIX = ".smolcli-adapter-"
# our own metadata, beside llama.cpp's adapter.* keys: what `smolcli info` shows and the runtime reads
KEY_BASE = "smolcli.adapter.base"
KEY_MODULES = "smolcli.adapter.modules"
KEY_RANK = "smolcli.adapter.rank"
KEY_RSLORA = "smolcli.adapter.rslora"
KEY_MMPROJ = "smolcli.adapter.mmproj"  # the merged mmproj's file name, beside the adapter


@dataclass
class AdapterResult:
    adapter: Path
    mmproj: Path | None  # the merged vision file, when the adapter touches the vision encoder or the connector


def adapter_paths(outdir: Path, name: str, qtype: str, mmproj_type: str) -> tuple[Path, Path]:
    return outdir / f"{name}-LoRA-{qtype}.gguf", outdir / f"mmproj-{name}-{mmproj_type}.gguf"


def _refuse_unmergeable(adapter: Adapter) -> None:
    merge = f"merge it instead: smolcli convert BASE --adapter {adapter.root}"
    if adapter.is_dora:
        raise BadInput(
            f"{adapter.root}: a DoRA adapter cannot run as a llama.cpp LoRA (its magnitude vector rescales "
            f"whole rows of the merged weight); {merge}"
        )
    text_replaced = [n for n in adapter.replaced if not n.startswith(("model.vision_model.", "model.connector."))]
    if text_replaced:
        raise BadInput(
            f"{adapter.root}: modules_to_save replaces {text_replaced[0]} whole, which a llama.cpp LoRA cannot; {merge}"
        )


def _plan_module(checkpoint: Checkpoint, lora: LoraModule, alpha: float, qtype: QType) -> list[PlannedTensor]:
    family, text = checkpoint.family, checkpoint.text
    name, pattern, _ = gguf_name(family.text_tensors, lora.weight)
    heads = {"q": text["num_attention_heads"], "k": text["num_key_value_heads"]}.get(
        family.rotary_permuted.get(pattern, "")
    )
    # llama.cpp scales by alpha / rank; PEFT by lora.scale: B carries the ratio
    ratio = np.float32(lora.scale * lora.rank / alpha) if alpha else np.float32(lora.scale)

    def produce_b():
        b = to_float32(np.asarray(lora.b.load()), lora.b.dtype) * ratio
        yield encode(rotary_interleave(b, heads) if heads else b, "F32", b_type)

    def produce_a():
        yield encode(np.asarray(lora.a.load()), lora.a.dtype, a_type)

    a_type, b_type = tensor_qtype(lora.a.shape, qtype), tensor_qtype(lora.b.shape, qtype)
    return [
        PlannedTensor(f"{name}.lora_a", lora.a.shape, a_type, produce_a),
        PlannedTensor(f"{name}.lora_b", lora.b.shape, b_type, produce_b),
    ]


def write_lora_gguf(
    checkpoint: Checkpoint, adapter: Adapter, path: Path, qtype: QType, mmproj_name: str | None, report, label: str
) -> None:
    alpha = adapter.config.alpha
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(adapter.name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_string(KEY_BASE, adapter.config.base_model or checkpoint.root.name)
    text_modules = [m for m in adapter.modules.values() if not m.vision]
    leaves = sorted({m.module.rsplit(".", 1)[-1] for m in adapter.modules.values()})
    writer.add_array(KEY_MODULES, leaves)
    writer.add_uint32(KEY_RANK, max((m.rank for m in adapter.modules.values()), default=0))
    writer.add_bool(KEY_RSLORA, adapter.config.use_rslora)
    if mmproj_name:
        writer.add_string(KEY_MMPROJ, mmproj_name)
    tensors = [t for module in text_modules for t in _plan_module(checkpoint, module, alpha, qtype)]
    write_gguf(path, writer, tensors, report, label)


def convert_adapter(
    adapter_dir: Path,
    base: Path,
    outdir: Path | None = None,
    qtype: str = DEFAULT_ADAPTER_TYPE,
    mmproj_type: str = "F16",
    name: str | None = None,
    report: Callable[[str], None] = lambda message: None,
) -> AdapterResult:
    """Write NAME-LoRA-TYPE.gguf (and mmproj-NAME-TYPE.gguf when the adapter adapts the vision side)."""
    qtype = parse_quant(qtype, ADAPTER_TYPES, "adapter type")
    mmproj_type = parse_quant(mmproj_type, MMPROJ_TYPES, "mmproj type")
    checkpoint = open_checkpoint(Path(base))
    adapter = open_adapter(Path(adapter_dir), checkpoint, name)
    _refuse_unmergeable(adapter)
    outdir = Path(outdir) if outdir is not None else Path.cwd()
    outdir.mkdir(parents=True, exist_ok=True)
    adapter_path, mmproj_path = adapter_paths(outdir, adapter.name, qtype, mmproj_type)
    vision = adapter.has_vision
    report(
        f"converting adapter {adapter.root} (rank {adapter.config.rank}, alpha {adapter.config.alpha:g}, "
        f"{len(adapter.modules)} modules) for {checkpoint.generation} base {checkpoint.root}"
    )
    with stage_beside(adapter_path, STAGE_PREFIX) as stage:
        staged_adapter, staged_mmproj = stage / "adapter.gguf", stage / "mmproj.gguf"
        if vision:
            report("  the adapter changes the vision encoder or connector: writing the merged mmproj beside it")
            merged = merged_checkpoint(checkpoint, adapter)
            write_mmproj(merged, staged_mmproj, MMPROJ_TYPES[mmproj_type], adapter.name, report, mmproj_path.name)
        write_lora_gguf(
            checkpoint,
            adapter,
            staged_adapter,
            ADAPTER_TYPES[qtype],
            mmproj_path.name if vision else None,
            report,
            adapter_path.name,
        )
        if vision:
            os.replace(staged_mmproj, mmproj_path)
        os.replace(staged_adapter, adapter_path)
    return AdapterResult(adapter_path, mmproj_path if vision else None)
