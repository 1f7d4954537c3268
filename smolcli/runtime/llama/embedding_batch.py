"""Embedding rows into llama.cpp's KV cache through a llama_batch of embeddings, without mtmd.

What mtmd_helper_decode_image_chunk does for an Idefics3 mmproj: the rows in batches of at most
n_batch, positions n_past, n_past + 1, ... on sequence 0, causal attention left as it is (mtmd
turns it off only for Gemma 3/4 and DeepSeek's projectors), one position per row (no M-RoPE).
Unlike mtmd, the last row asks for its logits, so a prompt that ends on an image can be sampled from.
"""

from __future__ import annotations

import ctypes

import numpy as np

from smolcli.errors import SmolcliError


def _decode_batch(llama_cpp, ctx, rows: np.ndarray, n_past: int, last_logits: bool) -> None:
    """One llama_decode of contiguous float32 rows (at most n_batch of them) at n_past onward."""
    count, n_embd = rows.shape
    batch = llama_cpp.llama_batch_init(count, n_embd, 1)
    try:
        ctypes.memmove(batch.embd, rows.ctypes.data, count * n_embd * 4)
        for i in range(count):
            batch.pos[i] = n_past + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = last_logits and i == count - 1
        batch.n_tokens = count
        status = llama_cpp.llama_decode(ctx, batch)
    finally:
        llama_cpp.llama_batch_free(batch)
    if status != 0:
        raise SmolcliError(f"llama.cpp failed to evaluate the prompt's embeddings (status {status})")


def decode_embeddings(llama_cpp, ctx, embeddings: np.ndarray, n_past: int, n_batch: int) -> int:
    """Decode float32 [n_tokens, n_embd] rows at n_past onward; returns the new n_past."""
    rows = np.ascontiguousarray(embeddings, dtype=np.float32)
    n_tokens = len(rows)
    for start in range(0, n_tokens, n_batch):
        piece = rows[start : start + n_batch]
        _decode_batch(llama_cpp, ctx, piece, n_past + start, start + len(piece) == n_tokens)
    return n_past + n_tokens


class EmbeddingStream:
    """Rows appended in prompt order (text runs' and tiles' alike), decoded n_batch at a time.

    A whole prompt goes in as few llama_decode calls as n_batch allows, holding at most one batch of
    rows: a full batch is decoded only when more rows come, so the prompt's last row is always in
    the batch that finish() decodes, and asks for the logits.
    """

    def __init__(self, llama_cpp, ctx, n_embd: int, n_batch: int, n_past: int, n_tokens: int):
        self._llama, self._ctx = llama_cpp, ctx
        self._buffer = np.empty((max(1, min(n_batch, n_tokens)), n_embd), dtype=np.float32)
        self._filled = 0
        self.n_past = n_past  # positions decoded so far

    def append(self, rows: np.ndarray) -> None:
        start = 0
        while start < len(rows):
            if self._filled == len(self._buffer):
                self._flush(last_logits=False)
            take = min(len(self._buffer) - self._filled, len(rows) - start)
            self._buffer[self._filled : self._filled + take] = rows[start : start + take]
            self._filled += take
            start += take

    def finish(self) -> int:
        """Decode what is left, the last row with its logits; returns the new n_past."""
        if self._filled:
            self._flush(last_logits=True)
        return self.n_past

    def _flush(self, last_logits: bool) -> None:
        _decode_batch(self._llama, self._ctx, self._buffer[: self._filled], self.n_past, last_logits)
        self.n_past += self._filled
        self._filled = 0
