"""A language model's input embeddings for given tokens, read from its GGUF's token_embd rows.

Why: on our own image layout a prompt's tiles go into llama.cpp as embedding rows, and a llama_batch
holds tokens or embeddings, never both; so its text runs become rows too, and the whole prompt
decodes in a few n_batch batches instead of one llama_decode per text run and per tile.

That is exact only where llama.cpp's input is a plain lookup. For the `llama` architecture
(vendor/llama.cpp src/models/llama.cpp) the graph's input is build_inp_embd(tok_embd) in
src/llama-graph.cpp: ggml_get_rows(tok_embd, tokens), dequantized to float32, then
  - a LoRA adapter's delta, when an adapter holds token_embd (refused; ours never do: the converter's
    adapters hold linear layers only);
  - padding to n_embd_inp, only for deepstack models (refused here: n_embd_inp must be the row width);
  - a scale by f_embedding_scale, which only granite, grok, minicpm, hrm-text and dflash set
    (not llama: so refused for any other architecture).
Rows are dequantized with gguf-py's numpy kernels, which follow ggml's (tests compare the logits of
a prompt fed as tokens and as these rows), only for the distinct tokens asked: the whole 49k
vocabulary in float32 would be 113 MB for 256M and 400 MB for 2.2B. The file is mapped, not read.
"""

from __future__ import annotations

import gguf
import numpy as np

from smolcli.errors import SmolcliError
from smolcli.runtime.gguf.gguf_file import GGUFSummary

TOKEN_EMBD = "token_embd.weight"
PLAIN_LOOKUP_ARCHITECTURES = ("llama",)


class TokenEmbeddings:
    """token_embd's rows for token ids, float32 [n_tokens, n_embd]; the file mapped once, per model file."""

    def __init__(self, summary: GGUFSummary):
        entry = summary.tensors[TOKEN_EMBD]
        self.qtype = gguf.GGMLQuantizationType(entry.ggml_type)
        self.n_embd, self.n_vocab = entry.dims
        block, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        row_bytes = self.n_embd // block * type_size
        self._raw = np.memmap(summary.path, np.uint8, "r", offset=entry.offset, shape=(self.n_vocab, row_bytes))

    def rows(self, tokens: list[int]) -> np.ndarray:
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_vocab):
            raise SmolcliError(f"a token id out of range for a {self.n_vocab}-token vocabulary")
        distinct, where = np.unique(ids, return_inverse=True)
        values = gguf.quants.dequantize(np.asarray(self._raw[distinct]), self.qtype)
        return np.ascontiguousarray(values.reshape(len(distinct), self.n_embd)[where], dtype=np.float32)


def plain_lookup_refusal(
    summary: GGUFSummary, n_embd_inp: int, n_vocab: int, adapters: list[GGUFSummary]
) -> str | None:
    """Why a prompt's text cannot be fed as token_embd rows with the same numbers as tokens; None when it can."""
    if summary.architecture not in PLAIN_LOOKUP_ARCHITECTURES:
        return f"architecture {summary.architecture} may transform its token embeddings"
    for adapter in adapters:
        if any(name.startswith(TOKEN_EMBD) for name in adapter.tensors):
            return f"the LoRA adapter {adapter.path.name} changes the token embeddings"
    entry = summary.tensors.get(TOKEN_EMBD)
    if entry is None or len(entry.dims) != 2:
        return f"no 2-D {TOKEN_EMBD}"
    if tuple(entry.dims) != (n_embd_inp, n_vocab):
        return f"{TOKEN_EMBD} is {entry.dims}, the model's input is {n_embd_inp} wide over {n_vocab} tokens"
    try:
        qtype = gguf.GGMLQuantizationType(entry.ggml_type)
        gguf.quants.dequantize(np.zeros(gguf.GGML_QUANT_SIZES[qtype][1], np.uint8), qtype)
    except (ValueError, KeyError, NotImplementedError):
        return f"gguf-py cannot dequantize {TOKEN_EMBD}'s type {entry.ggml_type}"
    return None
