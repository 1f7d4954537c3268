"""Read safetensors files tensor by tensor through memory maps, without torch.

Each tensor gets its own small mapping that is released with the array, so a
conversion never holds more than the tensor in hand (the whole-file mapping
would count every page it touched in the process's resident set).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smolcli.errors import SmolcliError

# bf16 has no numpy dtype: it is read as raw 16-bit words and widened on demand.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

HEADER_LIMIT = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    def load(self) -> np.ndarray:
        """The tensor as stored (bf16 as uint16 words), backed by its own read-only mapping."""
        if self.nbytes == 0:
            return np.zeros(self.shape, dtype=DTYPES[self.dtype])
        return np.memmap(self.path, dtype=DTYPES[self.dtype], mode="r", offset=self.offset, shape=self.shape)

    def load_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the tensor, through a mapping of just those bytes."""
        row_bytes = self.nbytes // self.shape[0]
        return np.memmap(
            self.path,
            dtype=DTYPES[self.dtype],
            mode="r",
            offset=self.offset + start * row_bytes,
            shape=(stop - start, *self.shape[1:]),
        )


def to_float32(data: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return (data.astype(np.uint32) << 16).view(np.float32)
    return data.astype(np.float32)


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and validate one file's header: every entry must lie inside the file."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise SmolcliError(f"{path}: not a safetensors file (too short); re-download it")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(HEADER_LIMIT, size - 8):
            raise SmolcliError(
                f"{path}: corrupt safetensors header (length {header_len} past the file's end); re-download it"
            )
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SmolcliError(f"{path}: corrupt safetensors header ({error.__class__.__name__}); re-download it") from None
    if not isinstance(header, dict):
        raise SmolcliError(f"{path}: corrupt safetensors header (not a JSON object); re-download it")

    data_start = 8 + header_len
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SmolcliError(f"{path}: corrupt safetensors header entry for {name!r}; re-download it") from None
        if dtype not in DTYPES:
            raise SmolcliError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        expected = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
        if end - begin != expected or begin < 0:
            raise SmolcliError(
                f"{path}: corrupt safetensors header: {name!r} spans {end - begin} bytes, its shape needs {expected}"
            )
        if data_start + end > size:
            raise SmolcliError(
                f"{path}: truncated: tensor {name!r} ends at byte {data_start + end} but the file has {size}; re-download it"
            )
        entries[name] = TensorEntry(name, dtype, shape, path, data_start + begin, end - begin)
    return entries
