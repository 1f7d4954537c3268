"""Stream tensors into a GGUF file one at a time: plan every tensor first, then encode and write each in turn."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import gguf
import numpy as np

from smolcli.convert.safetensors_file import TensorEntry, to_float32

QType = gguf.GGMLQuantizationType
# the float types a whole file can be written in, by the names quantize.py uses
FLOAT_TYPES = {"F32": QType.F32, "F16": QType.F16, "BF16": QType.BF16}
PROGRESS_MIN_TENSORS = 100
# Big tensors (the 2.2B model's embeddings are 200 MB in bf16) are read, widened and
# encoded a slice of rows at a time, so that peak memory is a slice, not three copies.
CHUNK_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor of a GGUF file to write, or only to size (quant_layout's estimates): then `produce` is None."""

    name: str
    shape: tuple[int, ...]  # row-major, as numpy holds it
    qtype: QType
    # the encoded tensor, a run of whole rows at a time
    produce: Callable[[], Iterator[np.ndarray]] | None = field(default=None, compare=False, repr=False)

    @property
    def width(self) -> int:
        """Elements per row (ggml ne[0])."""
        return self.shape[-1]

    @property
    def rows(self) -> int:
        return math.prod(self.shape[:-1])

    @property
    def block(self) -> int | None:
        """The transformer block of a language-model tensor (blk.N.*), None for the others."""
        parts = self.name.split(".")
        return int(parts[1]) if parts[0] == "blk" else None

    @property
    def nbytes(self) -> int:
        block_size, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        return self.rows * (self.width // block_size) * type_size


def tensor_qtype(shape: tuple[int, ...], requested: QType, keep_f32: bool = False) -> QType:
    """Vectors (norms, biases) and tensors llama.cpp wants exact stay F32; rows too narrow for a block go F16."""
    if keep_f32 or len(shape) == 1:
        return QType.F32
    if shape[-1] % gguf.GGML_QUANT_SIZES[requested][0] != 0:
        return QType.F16
    return requested


def encode(raw: np.ndarray, source_dtype: str, qtype: QType) -> np.ndarray:
    """Turn a tensor as stored in safetensors into the bytes of a GGUF tensor type."""
    if qtype == QType.BF16 and source_dtype == "BF16":
        return np.ascontiguousarray(raw)  # bf16 words pass through untouched
    if qtype == QType.F16 and source_dtype == "F16":
        return np.ascontiguousarray(raw)
    data = to_float32(raw, source_dtype)
    if qtype == QType.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == QType.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data), qtype)


def row_chunks(
    entry: TensorEntry, qtype: QType, transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> Iterator[np.ndarray]:
    """Encode a stored tensor slice by slice; a transform that mixes rows gets the whole tensor."""
    if transform is not None or len(entry.shape) == 1:
        raw = entry.load()
        yield encode(transform(raw) if transform else raw, entry.dtype, qtype)
        return
    rows = entry.shape[0]
    step = max(1, CHUNK_BYTES // max(1, entry.nbytes // rows))
    for start in range(0, rows, step):
        yield encode(entry.load_rows(start, min(rows, start + step)), entry.dtype, qtype)


def write_gguf(
    path: Path,
    writer: gguf.GGUFWriter,
    tensors: list[PlannedTensor],
    report: Callable[[str], None],
    label: str,
) -> None:
    """Write metadata already added to `writer`, then every planned tensor, to `path`."""
    for tensor in tensors:
        writer.add_tensor_info(tensor.name, tensor.shape, np.dtype(np.float32), tensor.nbytes, raw_dtype=tensor.qtype)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    (handle,) = writer.fout
    total = len(tensors)
    # big files get a line every tenth of the way; small ones just the last
    step = total // 10 if total >= PROGRESS_MIN_TENSORS else total
    for index, tensor in enumerate(tensors, 1):
        writer.write_padding(handle, handle.tell())
        written = 0
        for chunk in tensor.produce():
            chunk.tofile(handle)
            written += chunk.nbytes
        if written != tensor.nbytes:
            raise AssertionError(f"{tensor.name}: encoded {written} bytes, planned {tensor.nbytes}")
        writer.write_padding(handle, written)
        if index % step == 0 or index == total:
            report(f"  {label}: {index}/{total} tensors")
    writer.close()
