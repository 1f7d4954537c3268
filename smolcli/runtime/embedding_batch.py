"""Image embeddings into llama.cpp's KV cache through a llama_batch of embeddings, without mtmd.

What mtmd_helper_decode_image_chunk does for an Idefics3 mmproj: the rows in batches of at most
n_batch, positions n_past, n_past + 1, ... on sequence 0, causal attention left as it is (mtmd
turns it off only for Gemma 3/4 and DeepSeek's projectors), one position per row (no M-RoPE).
Unlike mtmd, the last row asks for its logits, so a prompt that ends on an image can be sampled from.
"""

from __future__ import annotations

import ctypes

import numpy as np

from smolcli.errors import SmolcliError


def decode_embeddings(llama_cpp, ctx, embeddings: np.ndarray, n_past: int, n_batch: int) -> int:
    """Decode float32 [n_tokens, n_embd] rows at n_past onward; returns the new n_past."""
    rows = np.ascontiguousarray(embeddings, dtype=np.float32)
    n_tokens, n_embd = rows.shape
    for start in range(0, n_tokens, n_batch):
        count = min(n_batch, n_tokens - start)
        batch = llama_cpp.llama_batch_init(count, n_embd, 1)
        try:
            ctypes.memmove(batch.embd, rows[start : start + count].ctypes.data, count * n_embd * 4)
            for i in range(count):
                batch.pos[i] = n_past + start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = start + i == n_tokens - 1
            batch.n_tokens = count
            status = llama_cpp.llama_decode(ctx, batch)
        finally:
            llama_cpp.llama_batch_free(batch)
        if status != 0:
            raise SmolcliError(f"llama.cpp failed to evaluate an image (status {status})")
    return n_past + n_tokens
