"""Check a GGUF file in Python before llama.cpp sees it: llama.cpp aborts the process on some bad files.

Only the header is read: scalar metadata, the lengths of arrays, and the tensor table.
gguf-py's GGUFReader would also build every tokenizer array (seconds for a 49k vocabulary)
on each `ask`, before llama.cpp reads the same file again.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from smolcli.errors import SmolcliError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
SHORT_ARRAY = 16  # arrays up to this length are kept (image mean/std); longer ones only counted

ValueType = gguf.GGUFValueType
# how each scalar value type is packed
SCALARS = {
    ValueType.UINT8: "<B",
    ValueType.INT8: "<b",
    ValueType.UINT16: "<H",
    ValueType.INT16: "<h",
    ValueType.UINT32: "<I",
    ValueType.INT32: "<i",
    ValueType.FLOAT32: "<f",
    ValueType.BOOL: "<?",
    ValueType.UINT64: "<Q",
    ValueType.INT64: "<q",
    ValueType.FLOAT64: "<d",
}
STRING, ARRAY = ValueType.STRING, ValueType.ARRAY
TOKENIZER_PREFIX = "tokenizer.ggml."  # the vocabulary arrays' keys (gguf.Keys.Tokenizer), left out of metadata
CLIP_ARCHITECTURE = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ]


@dataclass(frozen=True)
class GGUFSummary:
    path: Path
    architecture: str
    kind: str  # "model", "mmproj" or "adapter"
    metadata: dict  # scalars and short arrays; tokenizer.ggml.* left out
    tensor_types: dict[str, int]  # GGML type name -> tensor count
    parameters: int
    size: int
    array_lengths: dict[str, int] = field(default_factory=dict)  # every array key, tokenizer ones included
    scalar_offsets: dict[str, int] = field(default_factory=dict)  # where each scalar value's bytes start in the file
    tensors: dict[str, "TensorEntry"] = field(default_factory=dict)  # the tensor table, data offsets absolute

    @property
    def embedding_length(self) -> int | None:
        return self.metadata.get(gguf.Keys.LLM.EMBEDDING_LENGTH.format(arch=self.architecture))

    @property
    def projection_dim(self) -> int | None:
        return self.metadata.get(gguf.Keys.ClipVision.PROJECTION_DIM)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's place in the file: enough to map its bytes (runtime.token_embeddings reads token_embd's rows)."""

    ggml_type: int
    dims: tuple[int, ...]  # GGUF order: dims[0] is the row width
    offset: int  # from the start of the file


class _Damaged(Exception):
    pass


class _Header:
    """A cursor over the mapped file."""

    def __init__(self, data: mmap.mmap):
        self.data = data
        self.pos = 0

    def scalar(self, fmt: str):
        try:
            (value,) = struct.unpack_from(fmt, self.data, self.pos)
        except struct.error:
            raise _Damaged("header runs past the end") from None
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        if self.pos + length > len(self.data):
            raise _Damaged("a string runs past the end")
        text = bytes(self.data[self.pos : self.pos + length]).decode("utf-8", errors="replace")
        self.pos += length
        return text

    def value(self, kind: int, key: str, lengths: dict[str, int]):
        if kind in SCALARS:
            return self.scalar(SCALARS[kind])
        if kind == STRING:
            return self.string()
        if kind != ARRAY:
            raise _Damaged(f"unknown value type {kind} for {key}")
        item_kind, count = self.scalar("<I"), self.scalar("<Q")
        lengths[key] = count
        if count <= SHORT_ARRAY:
            return [self.value(item_kind, key, {}) for _ in range(count)]
        self.skip(item_kind, count)
        return None

    def skip(self, kind: int, count: int) -> None:
        if kind in SCALARS:
            self.pos += struct.calcsize(SCALARS[kind]) * count
        elif kind == STRING:
            for _ in range(count):  # each string carries its own length
                self.pos += 8 + self.scalar("<Q")
        elif kind == ARRAY:
            for _ in range(count):
                item_kind, item_count = self.scalar("<I"), self.scalar("<Q")
                self.skip(item_kind, item_count)
        else:
            raise _Damaged(f"unknown value type {kind}")
        if self.pos > len(self.data):
            raise _Damaged("an array runs past the end")


def _tensor_bytes(kind: int, dims: list[int]) -> int:
    try:
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
    except (ValueError, KeyError):
        raise _Damaged(f"unknown tensor type {kind}") from None
    return math.prod(dims) // block * type_size


def _parse(path: Path, data: mmap.mmap, size: int) -> GGUFSummary:
    header = _Header(data)
    header.pos = 4
    version = header.scalar("<I")
    if version not in SUPPORTED_VERSIONS:
        raise SmolcliError(f"{path}: GGUF version {version} is not supported (2 or 3); convert the model again")
    n_tensors, n_kv = header.scalar("<Q"), header.scalar("<Q")
    metadata: dict = {}
    lengths: dict[str, int] = {}
    offsets: dict[str, int] = {}
    for _ in range(n_kv):
        key = header.string()
        kind = header.scalar("<I")
        if kind in SCALARS:
            offsets[key] = header.pos
        value = header.value(kind, key, lengths)
        if value is not None and not key.startswith(TOKENIZER_PREFIX):
            metadata[key] = value
    tensors = []
    for _ in range(n_tensors):
        name = header.string()
        dims = [header.scalar("<Q") for _ in range(header.scalar("<I"))]
        kind, offset = header.scalar("<I"), header.scalar("<Q")
        tensors.append((name, dims, kind, offset))
    alignment = int(metadata.get(gguf.Keys.General.ALIGNMENT, DEFAULT_ALIGNMENT))
    data_start = -(-header.pos // alignment) * alignment
    types: dict[str, int] = {}
    entries: dict[str, TensorEntry] = {}
    parameters = 0
    for name, dims, kind, offset in tensors:
        if data_start + offset + _tensor_bytes(kind, dims) > size:
            raise SmolcliError(
                f"{path}: truncated GGUF file (tensor {name} runs past the end); download or convert it again"
            )
        type_name = gguf.GGMLQuantizationType(kind).name
        types[type_name] = types.get(type_name, 0) + 1
        parameters += math.prod(dims)
        entries[name] = TensorEntry(kind, tuple(dims), data_start + offset)
    architecture = str(metadata.get(gguf.Keys.General.ARCHITECTURE, "?"))
    is_mmproj = architecture == CLIP_ARCHITECTURE or metadata.get(gguf.Keys.General.TYPE) == gguf.GGUFType.MMPROJ
    kind = gguf.GGUFType.MMPROJ if is_mmproj else gguf.GGUFType.MODEL
    if metadata.get(gguf.Keys.General.TYPE) == gguf.GGUFType.ADAPTER:
        kind = gguf.GGUFType.ADAPTER  # a LoRA: applied to a base model, never loaded as one
    return GGUFSummary(path, architecture, kind, metadata, types, parameters, size, lengths, offsets, entries)


def read_gguf(path: Path) -> GGUFSummary:
    path = Path(path)
    if not path.exists():
        raise SmolcliError(f"{path}: no such file")
    if path.is_dir():
        raise SmolcliError(f"{path}: is a folder, not a GGUF file")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if handle.read(4) != MAGIC:
            raise SmolcliError(
                f"{path}: not a GGUF file (it does not start with 'GGUF'); convert a checkpoint with `smolcli convert`"
            )
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                return _parse(path, data, size)
            except _Damaged as error:
                raise SmolcliError(
                    f"{path}: damaged or truncated GGUF file ({error}); convert or download it again"
                ) from None
