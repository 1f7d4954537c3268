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

import math
from collections import Counter
from dataclasses import dataclass

import gguf

from smolcli.convert.checkpoint import expand_blocks, gguf_name
from smolcli.convert.gguf_out import QType, tensor_qtype
from smolcli.convert.mmproj import MMPROJ_TYPES
from smolcli.convert.quantize import QUANT_TYPES
from smolcli.errors import SmolcliError
from smolcli.models import smolvlm

FLOAT_MIXES = {"F32": QType.F32, "F16": QType.F16, "BF16": QType.BF16}
# the type llama.cpp starts each tensor of a mix from (llama_ftype_get_default_type)
DEFAULT_TYPES = {
    "Q8_0": QType.Q8_0, "Q6_K": QType.Q6_K, "Q5_K_M": QType.Q5_K, "Q5_K_S": QType.Q5_K, "Q5_1": QType.Q5_1,
    "Q5_0": QType.Q5_0, "Q4_K_M": QType.Q4_K, "Q4_K_S": QType.Q4_K, "Q4_1": QType.Q4_1, "Q4_0": QType.Q4_0,
    "IQ4_NL": QType.IQ4_NL, "IQ4_XS": QType.IQ4_XS,
}
# what a type becomes when a row is not a whole number of its blocks (tensor_type_fallback)
FALLBACKS = {QType.IQ4_XS: QType.IQ4_NL, QType.Q4_K: QType.Q5_0, QType.Q5_K: QType.Q5_1, QType.Q6_K: QType.Q8_0}
ESTIMATED_MIXES = tuple(FLOAT_MIXES) + tuple(DEFAULT_TYPES)

# Header estimates for files not yet written. A SmolLM2 vocabulary stores each token
# (8-byte length + ~8 bytes), its type (4 bytes) and about one merge per token (8 + ~10 bytes).
HEADER_BYTES_PER_VOCAB_ENTRY = 38
HEADER_FIXED_BYTES = 8192  # scalar keys, the chat template
TENSOR_INFO_FIXED_BYTES = 8 + 4 + 4 + 8  # name length, dims count, type, offset
ALIGNMENT = 32


@dataclass(frozen=True)
class TextDims:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int

    @classmethod
    def from_config(cls, text: dict) -> "TextDims":
        """From a config.json text section or a smolvlm_shapes entry."""
        n_embd, n_head = text["hidden_size"], text["num_attention_heads"]
        return cls(
            text["num_hidden_layers"], n_embd, n_head, text["num_key_value_heads"], text.get("head_dim", n_embd // n_head),
            text["intermediate_size"], text["vocab_size"], int(text.get("max_position_embeddings", 0)),
        )

    @classmethod
    def from_gguf(cls, metadata: dict, vocab_entries: int | None = None) -> "TextDims":
        arch = metadata["general.architecture"]

        def key(name: str) -> int:
            value = metadata.get(f"{arch}.{name}")
            if value is None:
                raise SmolcliError(f"the model file lacks {arch}.{name}; convert it again")
            return int(value)

        n_embd, n_head = key("embedding_length"), key("attention.head_count")
        head_dim = int(metadata.get(f"{arch}.attention.key_length", n_embd // n_head))
        n_vocab = int(metadata.get(f"{arch}.vocab_size", vocab_entries or 0))
        return cls(
            key("block_count"), n_embd, n_head, key("attention.head_count_kv"), head_dim, key("feed_forward_length"),
            n_vocab, int(metadata.get(f"{arch}.context_length", 0)),
        )

    @property
    def n_embd_kv(self) -> int:
        return self.n_head_kv * self.head_dim

    def as_config(self) -> dict:
        return {
            "hidden_size": self.n_embd, "num_attention_heads": self.n_head, "num_key_value_heads": self.n_head_kv,
            "head_dim": self.head_dim, "intermediate_size": self.n_ff, "vocab_size": self.n_vocab,
        }


@dataclass(frozen=True)
class VisionDims:
    image_size: int
    patch_size: int
    n_embd: int
    n_ff: int
    n_layer: int
    scale_factor: int
    longest_edge: int
    projection_dim: int  # the language model's embedding width

    @classmethod
    def from_shape(cls, shape: dict) -> "VisionDims":
        """From a smolvlm_shapes entry."""
        vision = shape["vision"]
        return cls(
            vision["image_size"], vision["patch_size"], vision["hidden_size"], vision["intermediate_size"],
            vision["num_hidden_layers"], shape["scale_factor"], shape["longest_edge"], shape["text"]["hidden_size"],
        )

    @classmethod
    def from_gguf(cls, metadata: dict) -> "VisionDims":
        def key(name: str) -> int:
            value = metadata.get(f"clip.{name}")
            if value is None:
                raise SmolcliError(f"the mmproj file lacks clip.{name}; convert it again")
            return int(value)

        return cls(
            key("vision.image_size"), key("vision.patch_size"), key("vision.embedding_length"),
            key("vision.feed_forward_length"), key("vision.block_count"), key("vision.projector.scale_factor"),
            key("vision.preproc_image_size"), key("vision.projection_dim"),
        )

    @property
    def patches_per_tile(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens_per_tile(self) -> int:
        return self.patches_per_tile // self.scale_factor**2


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    width: int  # elements per row (ggml ne[0])
    rows: int
    qtype: QType
    block: int | None  # the transformer block it belongs to

    @property
    def nbytes(self) -> int:
        block_size, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        return self.rows * (self.width // block_size) * type_size


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
    if name == "output.weight":
        if not _fits(width, qtype):
            return QType.Q8_0
        return qtype if qtype == QType.Q8_0 else QType.Q6_K
    if name.endswith("attn_v.weight"):
        if mix in ("Q4_K_M", "Q5_K_M") and _use_more_bits(index, count):
            return QType.Q6_K
        if mix == "Q4_K_S" and index < 4:
            return QType.Q5_K
        if mix in ("IQ4_NL", "IQ4_XS") and n_gqa >= 4:
            return QType.Q5_K
    if name.endswith("ffn_down.weight"):
        if mix in ("Q4_K_M", "Q5_K_M") and _use_more_bits(index, count):
            return QType.Q6_K
        if mix in ("Q4_K_S", "IQ4_NL", "IQ4_XS") and index < count // 8:
            return QType.Q5_K
    return qtype


def _text_shapes(dims: TextDims) -> dict[str, tuple[int, ...]]:
    """GGUF name -> row-major shape, in block order."""
    hf = expand_blocks(smolvlm.text_shapes(dims.as_config()), dims.n_layer)
    return {gguf_name(smolvlm.TEXT_TENSORS, name)[0]: shape for name, shape in hf.items()}


def _block_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "blk" else None


def _planned(name: str, shape: tuple[int, ...], qtype: QType) -> PlannedTensor:
    return PlannedTensor(name, shape[-1], math.prod(shape[:-1]), qtype, _block_of(name))


def text_layout(dims: TextDims, mix: str) -> Layout:
    """The language-model GGUF a conversion with this mix writes."""
    mix = mix.upper()
    if mix not in ESTIMATED_MIXES:
        raise SmolcliError(f"no size estimate for {mix}; estimates cover {', '.join(ESTIMATED_MIXES)}")
    shapes = _text_shapes(dims)
    n_gqa = dims.n_head // max(1, dims.n_head_kv)
    counters: Counter = Counter()
    counts = {"attn_v.weight": dims.n_layer, "ffn_down.weight": dims.n_layer}
    tensors = []
    for name, shape in shapes.items():
        width = shape[-1]
        if len(shape) == 1:
            qtype = QType.F32  # norms stay F32 in every mix
        elif mix in FLOAT_MIXES:
            qtype = tensor_qtype(shape, FLOAT_MIXES[mix])
        else:
            role = next((suffix for suffix in counts if name.endswith(suffix)), None)
            index = counters[role]
            counters[role] += 1
            qtype = _fallback(width, _mixed_type(mix, name, width, index, counts.get(role, 0), n_gqa))
        tensors.append(_planned(name, shape, qtype))
    header = _header_estimate(tensors, HEADER_FIXED_BYTES + dims.n_vocab * HEADER_BYTES_PER_VOCAB_ENTRY)
    return Layout(tuple(tensors), header)


def mmproj_layout(dims: VisionDims, mmproj_type: str) -> Layout:
    """The mmproj GGUF the converter writes (convert/mmproj.py) for these dimensions."""
    requested = MMPROJ_TYPES.get(mmproj_type.upper())
    if requested is None:
        raise SmolcliError(f"no size estimate for an {mmproj_type} mmproj; estimates cover {', '.join(MMPROJ_TYPES)}")
    vision = {
        "hidden_size": dims.n_embd, "intermediate_size": dims.n_ff, "patch_size": dims.patch_size,
        "image_size": dims.image_size, "num_channels": 3,
    }
    hf = expand_blocks(smolvlm.vision_shapes(vision, dims.scale_factor, dims.projection_dim), dims.n_layer)
    tensors = []
    for hf_name, shape in hf.items():
        name = gguf_name(smolvlm.VISION_TENSORS, hf_name)[0]
        qtype = tensor_qtype(shape, requested, keep_f32=name in smolvlm.VISION_F32_TENSORS)
        tensors.append(_planned(name, shape, qtype))
    return Layout(tuple(tensors), _header_estimate(tensors, HEADER_FIXED_BYTES))


def _header_estimate(tensors: list[PlannedTensor], metadata_bytes: int) -> int:
    # each tensor's info (its name, two 8-byte dimensions, type, offset) and up to one alignment of padding
    infos = sum(TENSOR_INFO_FIXED_BYTES + len(t.name) + 16 + ALIGNMENT for t in tensors)
    return metadata_bytes + infos


def mix_of(metadata: dict) -> str | None:
    """The mix a GGUF says it was written with (general.file_type), by the names quantize.py uses."""
    file_type = metadata.get("general.file_type")
    names = {int(value): name for name, value in QUANT_TYPES.items()}
    return names.get(int(file_type)) if file_type is not None else None
