"""One llama.cpp context: a KV cache of n_ctx positions over a loaded model, and how far it is filled.

Each conversation owns one (a Chat, a Model's own questions, a server's slot), so nothing is swapped in and
out: two contexts of one model decode side by side, each at its own position. The weights are the model's,
shared; a context costs its KV cache and compute buffer. Contexts are made by Engine.new_context.
"""

from __future__ import annotations

import ctypes
import time

import numpy as np

from smolcli.errors import ContextFull, SmolcliError
from smolcli.runtime.llama.counters import Counters
from smolcli.runtime.llama.embedding_batch import EmbeddingStream, decode_embeddings


class LlamaContext:
    """A llama.cpp context (`handle`), its size, its KV-cache type and position; decode, clear, rewind, free."""

    def __init__(
        self, llama_cpp, handle, n_batch: int, cache_type: str, n_vocab: int, counters: Counters, n_seq: int = 1
    ):
        self._llama = llama_cpp
        self.handle = handle
        self.n_ctx = int(llama_cpp.llama_n_ctx(handle))
        self.n_batch = n_batch
        self.n_seq = n_seq  # sequences it holds: 1 for a conversation's, more for a BatchDecoder's
        self.cache_type = cache_type
        self.n_past = 0
        self._n_vocab = n_vocab
        self.counters = counters  # the model's, shared by its contexts
        self._step_batch = None  # decode_step's llama_batch, made once (of _step_capacity tokens) and reused
        self._step_capacity = 0

    @property
    def freed(self) -> bool:
        return self.handle is None

    # --- filling -------------------------------------------------------------------------

    def check_fits(self, n_tokens: int) -> None:
        if self.n_past + n_tokens > self.n_ctx:
            raise context_full(self.n_past, n_tokens, self.n_ctx)

    def decode_tokens(self, tokens: list[int]) -> None:
        """Prompt tokens into the cache, n_batch at a time (counted as prefill)."""
        llama_cpp = self._llama
        started = time.perf_counter()
        for start in range(0, len(tokens), self.n_batch):
            piece = tokens[start : start + self.n_batch]
            array = (llama_cpp.llama_token * len(piece))(*piece)
            status = llama_cpp.llama_decode(self.handle, llama_cpp.llama_batch_get_one(array, len(piece)))
            if status != 0:
                raise SmolcliError(f"llama.cpp failed to evaluate the prompt (status {status})")
            self.n_past += len(piece)
        self.counters.text_tokens += len(tokens)
        self.counters.prefill_seconds += time.perf_counter() - started

    def decode_rows(self, rows: np.ndarray) -> None:
        """Embedding rows (float32 [n, n_embd]: an image tile's) into the cache at the next positions."""
        self.n_past = decode_embeddings(self._llama, self.handle, rows, self.n_past, self.n_batch)

    def row_stream(self, n_embd: int, n_tokens: int) -> EmbeddingStream:
        """A stream of a whole prompt's rows from n_past on; set n_past from its own when done (or failed)."""
        return EmbeddingStream(self._llama, self.handle, n_embd, self.n_batch, self.n_past, n_tokens)

    def accept(self, token: int) -> None:
        """Feed a generated token back so the next one can be sampled (counted as decoding)."""
        llama_cpp = self._llama
        self.check_fits(1)
        started = time.perf_counter()
        array = (llama_cpp.llama_token * 1)(token)
        status = llama_cpp.llama_decode(self.handle, llama_cpp.llama_batch_get_one(array, 1))
        if status != 0:
            raise SmolcliError(f"llama.cpp failed to decode (status {status})")
        self.n_past += 1
        self.counters.generated_tokens += 1
        self.counters.decode_seconds += time.perf_counter() - started

    def decode_step(self, entries: list[tuple[int, int, int]]) -> None:
        """One llama_decode of one token per sequence, each entry (token, position, sequence), each with its
        logits (logits_view(i) reads entry i's). For a context of several sequences (a BatchDecoder's)."""
        llama_cpp = self._llama
        if len(entries) > self._step_capacity:
            self._free_step_batch()
            self._step_batch = llama_cpp.llama_batch_init(max(len(entries), self.n_seq), 0, 1)
            self._step_capacity = max(len(entries), self.n_seq)
        batch = self._step_batch
        token, pos, n_seq_id, seq_id, logits = batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits
        for i, (entry_token, position, sequence) in enumerate(entries):
            token[i] = entry_token
            pos[i] = position
            n_seq_id[i] = 1
            seq_id[i][0] = sequence
            logits[i] = 1
        batch.n_tokens = len(entries)
        status = llama_cpp.llama_decode(self.handle, batch)
        if status != 0:
            raise SmolcliError(f"llama.cpp failed to decode {len(entries)} sequences together (status {status})")

    # --- a sequence's state, between contexts of one model ---------------------------------

    def sequence_state(self, sequence: int = 0) -> memoryview:
        """A sequence's KV cache (its cells, positions and values) as llama.cpp saves it (llama_state_seq_get_data),
        copied once, into a writable buffer: what load_sequence_state and the prefix cache's files take."""
        size = self.sequence_state_size(sequence)
        buffer = bytearray(size)
        written = self._llama.llama_state_seq_get_data(
            self.handle, (ctypes.c_uint8 * size).from_buffer(buffer), size, sequence
        )
        return memoryview(buffer)[:written]

    def sequence_state_size(self, sequence: int = 0) -> int:
        """What sequence_state() would copy out, without copying (llama.cpp counts it: cells held, not n_ctx)."""
        return int(self._llama.llama_state_seq_get_size(self.handle, sequence))

    def load_sequence_state(self, state: memoryview, sequence: int = 0) -> bool:
        """Replace a sequence's KV cache by a saved one (a writable view: sequence_state()'s, or a file's) of a
        context of the same model and cache type; False if llama.cpp could not place it (no room, another model,
        cache type or layout): the sequence is then empty."""
        size = state.nbytes
        buffer = (ctypes.c_uint8 * size).from_buffer(state)
        return self._llama.llama_state_seq_set_data(self.handle, buffer, size, sequence) == size

    def remove_sequence(self, sequence: int) -> None:
        """Empty one sequence's cells (the others stay)."""
        self._llama.llama_memory_seq_rm(self._llama.llama_get_memory(self.handle), sequence, -1, -1)

    # --- reading -------------------------------------------------------------------------

    def last_logits(self) -> np.ndarray:
        return self.logits_view().copy()

    def logits_view(self, index: int = -1) -> np.ndarray:
        """llama.cpp's own buffer of the last position's logits (or batch entry `index`'s), the one the sampler
        reads: writes are seen."""
        pointer = self._llama.llama_get_logits_ith(self.handle, index)
        return np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))

    # --- its state -----------------------------------------------------------------------

    def restore_state(self, state: memoryview, n_tokens: int) -> bool:
        """Load a sequence_state() of n_tokens positions into this empty context, counted as prefill; False (the
        context left empty) when llama.cpp refuses it (another model, cache type or layout, or too few cells)."""
        if n_tokens > self.n_ctx:
            return False
        started = time.perf_counter()
        if not self.load_sequence_state(state):
            self.clear()
            return False
        self.n_past = n_tokens
        self.counters.prefill_seconds += time.perf_counter() - started
        return True

    # --- emptying ------------------------------------------------------------------------

    def clear(self) -> None:
        """Empty the KV cache: a new conversation in the same context."""
        self._llama.llama_memory_clear(self._llama.llama_get_memory(self.handle), True)
        self.n_past = 0

    def rewind(self, n_past: int) -> None:
        """Forget everything after position n_past (an interrupted or overflowing turn)."""
        self._llama.llama_memory_seq_rm(self._llama.llama_get_memory(self.handle), 0, n_past, -1)
        self.n_past = n_past

    def free(self) -> None:
        """Free the KV cache; safe to call twice (the engine frees what is left before its model)."""
        self._free_step_batch()
        if self.handle is not None:
            self._llama.llama_free(self.handle)
            self.handle = None
            self.n_past = 0

    def _free_step_batch(self) -> None:
        if self._step_batch is not None:
            self._llama.llama_batch_free(self._step_batch)
            self._step_batch = None
            self._step_capacity = 0


def context_full(n_past: int, n_new: int, n_ctx: int) -> ContextFull:
    return ContextFull(
        f"the context is full: {n_past} tokens used + {n_new} new > {n_ctx}; start over (/clear in chat) or raise {{ctx}}",
        n_past=n_past,
        n_new=n_new,
        n_ctx=n_ctx,
    )
