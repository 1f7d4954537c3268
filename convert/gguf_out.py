"""Stream tensors into a GGUF file one at a time: plan every tensor first, then encode and write each in turn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from smolcli.convert.safetensors_file import to_float32

QType = gguf.GGMLQuantizationType
PROGRESS_MIN_TENSORS = 100


@dataclass
class PlannedTensor:
    name: str
    shape: tuple[int, ...]  # row-major, as numpy holds it
    qtype: QType
    produce: Callable[[], np.ndarray]  # the encoded bytes (or floats) for this tensor

    @property
    def nbytes(self) -> int:
        block, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        rows = int(np.prod(self.shape[:-1], dtype=np.int64))
        return rows * (self.shape[-1] // block) * type_size


def fits_blocks(shape: tuple[int, ...], qtype: QType) -> bool:
    return shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0


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
    total = len(tensors)
    # big files get a line every tenth of the way; small ones just the last
    step = total // 10 if total >= PROGRESS_MIN_TENSORS else total
    for index, tensor in enumerate(tensors, 1):
        data = tensor.produce()
        if data.nbytes != tensor.nbytes:
            raise AssertionError(f"{tensor.name}: encoded {data.nbytes} bytes, planned {tensor.nbytes}")
        writer.write_tensor_data(data)
        del data
        if index % step == 0 or index == total:
            report(f"  {label}: {index}/{total} tensors")
    writer.close()
