"""Which GGML type each tensor of a SmolVLM GGUF pair gets, and so how big the files are before they exist.

The language model follows llama.cpp's quantizer (src/llama-quant.cpp, llama_tensor_get_type):
each mix has a default type, a few tensors get more bits (output.weight Q6_K; in the _K_M
mixes some attn_v and ffn_down Q6_K), and a row whose width is not a multiple of the type's
block falls back (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), which is what happens to most
of the 576- and 960-wide 256M and 500M models. The float files and the mmproj follow the
converter's own rule (gguf_out.tensor_qtype). Shapes come from the family's shape tables,
so a layout is the converter's tensor list with llama.cpp's type choices applied.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import gguf

from smolcli.convert.checkpoint import expand_blocks, gguf_name
from smolcli.convert.gguf_out import FLOAT_TYPES, PlannedTensor, QType, tensor_qtype
from smolcli.convert.mmproj import MMPROJ_TYPES
from smolcli.convert.quantize import QUANT_TYPES
from smolcli.errors import SmolcliError
from smolcli.models.dims import TextDims, VisionDims
from smolcli.models.family import tensor_name
from smolcli.models.smolvlm import SMOLVLM

# the type llama.cpp starts each tensor of a mix from (llama_ftype_get_default_type)
DEFAULT_TYPES = {
    "Q8_0": QType.Q8_0,
    "Q6_K": QType.Q6_K,
    "Q5_K_M": QType.Q5_K,
    "Q5_K_S": QType.Q5_K,
    "Q5_1": QType.Q5_1,
    "Q5_0": QType.Q5_0,
    "Q4_K_M": QType.Q4_K,
    "Q4_K_S": QType.Q4_K,
    "Q4_1": QType.Q4_1,
    "Q4_0": QType.Q4_0,
    "IQ4_NL": QType.IQ4_NL,
    "IQ4_XS": QType.IQ4_XS,
}
# what a type becomes when a row is not a whole number of its blocks (tensor_type_fallback)
FALLBACKS = {QType.IQ4_XS: QType.IQ4_NL, QType.Q4_K: QType.Q5_0, QType.Q5_K: QType.Q5_1, QType.Q6_K: QType.Q8_0}
ESTIMATED_MIXES = tuple(FLOAT_TYPES) + tuple(DEFAULT_TYPES)
OUTPUT = tensor_name(gguf.MODEL_TENSOR.OUTPUT)
# the block tensors some mixes give more bits, by the end of their names (blk.N.attn_v.weight)
ATTN_V, FFN_DOWN = (
    tensor_name(t).removeprefix("blk.{bid}") for t in (gguf.MODEL_TENSOR.ATTN_V, gguf.MODEL_TENSOR.FFN_DOWN)
)

# Header estimates for files not yet written. A SmolLM2 vocabulary stores each token
# (8-byte length + ~8 bytes), its type (4 bytes) and about one merge per token (8 + ~10 bytes).
HEADER_BYTES_PER_VOCAB_ENTRY = 38
HEADER_FIXED_BYTES = 8192  # scalar keys, the chat template
TENSOR_INFO_FIXED_BYTES = 8 + 4 + 4 + 8  # name length, dims count, type, offset
ALIGNMENT = 32


@dataclass(frozen=True)
class Layout:
    tensors: tuple[PlannedTensor, ...]
    header_bytes: int  # an estimate: the vocabulary's strings are not known before conversion

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def file_bytes(self) -> int:
        return self.header_bytes + self.tensor_bytes

    def type_counts(self) -> Counter:
        return Counter(t.qtype.name for t in self.tensors)


def _block_width(qtype: QType) -> int:
    return gguf.GGML_QUANT_SIZES[qtype][0]


def _fits(width: int, qtype: QType) -> bool:
    return width % _block_width(qtype) == 0


def _fallback(width: int, qtype: QType) -> QType:
    if _fits(width, qtype):
        return qtype
    chosen = FALLBACKS.get(qtype, qtype)
    return chosen if _fits(width, chosen) else QType.F16


def _use_more_bits(index: int, count: int) -> bool:
    return index < count // 8 or index >= 7 * count // 8 or (index - count // 8) % 3 == 2


def _mixed_type(mix: str, name: str, width: int, index: int, count: int, n_gqa: int) -> QType:
    """llama_tensor_get_type_impl for a llama-architecture model with output.weight, no imatrix."""
    qtype = DEFAULT_TYPES[mix]
    if name == OUTPUT:
        if not _fits(width, qtype):
            return QType.Q8_0
        return qtype if qtype == QType.Q8_0 else QType.Q6_K
    if name.endswith(ATTN_V):
        if mix in ("Q4_K_M", "Q5_K_M") and _use_more_bits(index, count):
            return QType.Q6_K
        if mix == "Q4_K_S" and index < 4:
            return QType.Q5_K
        if mix in ("IQ4_NL", "IQ4_XS") and n_gqa >= 4:
            return QType.Q5_K
    if name.endswith(FFN_DOWN):
        if mix in ("Q4_K_M", "Q5_K_M") and _use_more_bits(index, count):
            return QType.Q6_K
        if mix in ("Q4_K_S", "IQ4_NL", "IQ4_XS") and index < count // 8:
            return QType.Q5_K
    return qtype


def _text_shapes(dims: TextDims) -> dict[str, tuple[int, ...]]:
    """GGUF name -> row-major shape, in block order."""
    hf = expand_blocks(SMOLVLM.text_shapes(dims.as_config()), dims.n_layer)
    return {gguf_name(SMOLVLM.text_tensors, name)[0]: shape for name, shape in hf.items()}


def text_layout(dims: TextDims, mix: str) -> Layout:
    """The language-model GGUF a conversion with this mix writes."""
    mix = mix.upper()
    if mix not in ESTIMATED_MIXES:
        raise SmolcliError(f"no size estimate for {mix}; estimates cover {', '.join(ESTIMATED_MIXES)}")
    shapes = _text_shapes(dims)
    n_gqa = dims.n_head // max(1, dims.n_head_kv)
    counters: Counter = Counter()
    counts = {ATTN_V: dims.n_layer, FFN_DOWN: dims.n_layer}
    tensors = []
    for name, shape in shapes.items():
        width = shape[-1]
        if len(shape) == 1:
            qtype = QType.F32  # norms stay F32 in every mix
        elif mix in FLOAT_TYPES:
            qtype = tensor_qtype(shape, FLOAT_TYPES[mix])
        else:
            role = next((suffix for suffix in counts if name.endswith(suffix)), None)
            index = counters[role]
            counters[role] += 1
            qtype = _fallback(width, _mixed_type(mix, name, width, index, counts.get(role, 0), n_gqa))
        tensors.append(PlannedTensor(name, shape, qtype))
    header = _header_estimate(tensors, HEADER_FIXED_BYTES + dims.n_vocab * HEADER_BYTES_PER_VOCAB_ENTRY)
    return Layout(tuple(tensors), header)


def mmproj_layout(dims: VisionDims, mmproj_type: str) -> Layout:
    """The mmproj GGUF the converter writes (convert/mmproj.py) for these dimensions."""
    requested = MMPROJ_TYPES.get(mmproj_type.upper())
    if requested is None:
        raise SmolcliError(f"no size estimate for an {mmproj_type} mmproj; estimates cover {', '.join(MMPROJ_TYPES)}")
    vision = {
        "hidden_size": dims.n_embd,
        "intermediate_size": dims.n_ff,
        "patch_size": dims.patch_size,
        "image_size": dims.image_size,
        "num_channels": 3,
    }
    hf = expand_blocks(SMOLVLM.vision_shapes(vision, dims.scale_factor, dims.projection_dim), dims.n_layer)
    tensors = []
    for hf_name, shape in hf.items():
        name = gguf_name(SMOLVLM.vision_tensors, hf_name)[0]
        qtype = tensor_qtype(shape, requested, keep_f32=name in SMOLVLM.vision_f32_tensors)
        tensors.append(PlannedTensor(name, shape, qtype))
    return Layout(tuple(tensors), _header_estimate(tensors, HEADER_FIXED_BYTES))


def _header_estimate(tensors: list[PlannedTensor], metadata_bytes: int) -> int:
    # each tensor's info (its name, two 8-byte dimensions, type, offset) and up to one alignment of padding
    infos = sum(TENSOR_INFO_FIXED_BYTES + len(t.name) + 16 + ALIGNMENT for t in tensors)
    return metadata_bytes + infos


def mix_of(metadata: dict) -> str | None:
    """The mix a GGUF says it was written with (general.file_type), by the names quantize.py uses."""
    file_type = metadata.get(gguf.Keys.General.FILE_TYPE)
    names = {int(value): name for name, value in QUANT_TYPES.items()}
    return names.get(int(file_type)) if file_type is not None else None
