"""Quantize a float language-model GGUF with llama.cpp's own quantizer (through llama-cpp-python)."""

from __future__ import annotations

import os
from pathlib import Path

import gguf

from smolcli.errors import SmolcliError

FileType = gguf.LlamaFileType

# Types llama.cpp quantizes to without an importance matrix, by the names its tools use.
QUANT_TYPES: dict[str, FileType] = {
    "F32": FileType.ALL_F32,
    "F16": FileType.MOSTLY_F16,
    "BF16": FileType.MOSTLY_BF16,
    "Q8_0": FileType.MOSTLY_Q8_0,
    "Q6_K": FileType.MOSTLY_Q6_K,
    "Q5_K_M": FileType.MOSTLY_Q5_K_M,
    "Q5_K_S": FileType.MOSTLY_Q5_K_S,
    "Q5_1": FileType.MOSTLY_Q5_1,
    "Q5_0": FileType.MOSTLY_Q5_0,
    "Q4_K_M": FileType.MOSTLY_Q4_K_M,
    "Q4_K_S": FileType.MOSTLY_Q4_K_S,
    "Q4_1": FileType.MOSTLY_Q4_1,
    "Q4_0": FileType.MOSTLY_Q4_0,
    "IQ4_NL": FileType.MOSTLY_IQ4_NL,
    "IQ4_XS": FileType.MOSTLY_IQ4_XS,
    "Q3_K_L": FileType.MOSTLY_Q3_K_L,
    "Q3_K_M": FileType.MOSTLY_Q3_K_M,
    "Q3_K_S": FileType.MOSTLY_Q3_K_S,
    "Q2_K": FileType.MOSTLY_Q2_K,
}
DEFAULT_QUANT = "Q4_K_M"

# K-quants and IQ4_XS pack rows in super-blocks of 256; narrower rows fall back to a legacy type.
SUPER_BLOCK = 256
SUPER_BLOCK_TYPES = {name for name in QUANT_TYPES if "_K" in name or name == "IQ4_XS"}


def parse_quant(name: str, choices: dict[str, object], what: str) -> str:
    key = name.strip().upper()
    if key not in choices:
        raise SmolcliError(f"unknown {what} {name!r}; choose one of {', '.join(choices)}")
    return key


def quantize(source: Path, target: Path, quant: str, threads: int | None = None) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(QUANT_TYPES[quant])
    params.nthread = threads or os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0:
        raise SmolcliError(
            f"llama.cpp could not quantize to {quant} (status {status}); rerun with {{verbose}} for its log"
        )


def tensor_types(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (GGML type name, ggml shape) for each tensor of a GGUF file."""
    reader = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape)) for t in reader.tensors}


def fallbacks(types: dict[str, tuple[str, tuple[int, ...]]], quant: str) -> dict[str, str]:
    """Tensors a super-block type could not take (row width not a multiple of 256), with the type they got."""
    if quant not in SUPER_BLOCK_TYPES:
        return {}
    return {name: qtype for name, (qtype, shape) in types.items() if len(shape) >= 2 and shape[0] % SUPER_BLOCK != 0}
