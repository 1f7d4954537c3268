"""The KV-cache types a run can ask llama.cpp for, declared once for the engine, the memory plan and the front ends."""

from __future__ import annotations

import gguf

# name (as --cache-type and cache_type= take it) -> the GGML type llama.cpp stores K and V in;
# in the order a memory limit tries them: largest first
KV_CACHE_TYPES: dict[str, gguf.GGMLQuantizationType] = {
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
}


def kv_block(cache_type: str) -> tuple[int, int]:
    """(elements per block, bytes per block) of a KV-cache type: f16 (1, 2), q8_0 (32, 34), q4_0 (32, 18)."""
    return gguf.GGML_QUANT_SIZES[KV_CACHE_TYPES[cache_type]]
