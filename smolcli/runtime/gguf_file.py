"""Check a GGUF file in Python before llama.cpp sees it: llama.cpp aborts the process on some bad files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

from smolcli.errors import SmolcliError

MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFSummary:
    path: Path
    architecture: str
    kind: str  # "model" or "mmproj"
    metadata: dict
    tensor_types: dict[str, int]  # GGML type name -> tensor count
    parameters: int
    size: int

    @property
    def embedding_length(self) -> int | None:
        return self.metadata.get(f"{self.architecture}.embedding_length")

    @property
    def projection_dim(self) -> int | None:
        return self.metadata.get("clip.vision.projection_dim")


def _plain(value):
    if isinstance(value, (list, tuple)) and len(value) > 16:
        return f"[{len(value)} items]"
    return value


def read_gguf(path: Path) -> GGUFSummary:
    path = Path(path)
    if not path.exists():
        raise SmolcliError(f"{path}: no such file")
    if path.is_dir():
        raise SmolcliError(f"{path}: is a folder, not a GGUF file")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != MAGIC:
        raise SmolcliError(f"{path}: not a GGUF file (it does not start with 'GGUF'); convert a checkpoint with `smolcli convert`")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as error:  # noqa: BLE001 - any parse failure means a damaged file
        raise SmolcliError(f"{path}: damaged or truncated GGUF file ({type(error).__name__}); convert or download it again") from None
    size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise SmolcliError(f"{path}: truncated GGUF file (tensor {tensor.name} runs past the end); download or convert it again")
    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key.startswith("tokenizer.ggml."):
            continue
        try:
            metadata[key] = _plain(field.contents())
        except Exception:  # noqa: BLE001 - an unreadable optional key is skipped, not fatal
            continue
    types: dict[str, int] = {}
    parameters = 0
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
        parameters += int(tensor.n_elements)
    architecture = str(metadata.get("general.architecture", "?"))
    kind = "mmproj" if architecture == "clip" or metadata.get("general.type") == "mmproj" else "model"
    return GGUFSummary(path, architecture, kind, metadata, types, parameters, size)
