"""Several generations decoded together: sequences of one llama.cpp context, one llama_decode per step.

Each conversation keeps its own context, and its prompt is evaluated there as it would be alone. To decode
beside others, its KV cache is copied into a free sequence of the decoder's shared context (n_seq_max
sequences over one pool of cells), and copied back when its answer ends. Each step decodes every joined
sequence's next token in one llama_batch: the weights are read once for all of them, which is where the
throughput comes from (benchmarks/serve_load.py --parallel). The tokens are the ones each would get alone
(tests/test_serve_parallel.py compares them). A generation that finds no free sequence or not enough cells
decodes alone in its own context.

The driver's contract (generate_pieces(..., decoder=) keeps it): every joined generation queues one token
(Sequence.accept), then the driver calls step() once, then each samples from its own row of the step's logits.
"""

from __future__ import annotations

import time

import numpy as np

from smolcli.errors import SmolcliError
from smolcli.runtime.llama.context import LlamaContext, context_full
from smolcli.runtime.llama.engine import Engine


class Sequence:
    """One generation's place in a BatchDecoder: what generate_pieces reads logits from and feeds tokens to,
    in place of its conversation's context (whose size still bounds it)."""

    def __init__(self, decoder: "BatchDecoder", context: LlamaContext, index: int, cells: int):
        self.decoder = decoder
        self.context = context
        self.index = index  # the sequence id in the shared context
        self.cells = cells  # the cells kept for it: its prompt and the answer's most tokens
        self.n_past = context.n_past
        self.row: int | None = None  # its row in the last step's logits; None before its first step
        self.pending: int | None = None  # the token the next step decodes

    def check_fits(self, n_tokens: int) -> None:
        if self.n_past + n_tokens > self.context.n_ctx:
            raise context_full(self.n_past, n_tokens, self.context.n_ctx)

    def accept(self, token: int) -> None:
        """Queue a generated token for the decoder's next step (the conversation's context is full: ContextFull)."""
        self.check_fits(1)
        self.pending = token

    def logits_view(self) -> np.ndarray:
        """Its logits: the prompt's (in its own context) before its first step, then its row of the last step's."""
        if self.row is None:
            return self.context.logits_view()
        return self.decoder.shared.logits_view(self.row)

    def last_logits(self) -> np.ndarray:
        return self.logits_view().copy()


class BatchDecoder:
    """Up to n_seq generations of one model stepped together, in n_ctx cells shared by them (f16 KV by default)."""

    def __init__(self, engine: Engine, n_seq: int, n_ctx: int, cache_type: str | None = None):
        if n_seq < 1:
            raise ValueError(f"a BatchDecoder needs at least one sequence, not {n_seq}")
        self.engine = engine
        # one token per sequence per decode: a compute buffer sized for n_seq tokens, not for a prompt's 512
        self.shared = engine.new_context(n_ctx, cache_type, n_seq=n_seq, n_batch=n_seq)
        self._free = list(range(n_seq))
        self._joined: list[Sequence] = []
        self._reserved = 0

    @property
    def n_seq(self) -> int:
        return self.shared.n_seq

    @property
    def joined(self) -> int:
        return len(self._joined)

    def join(self, context: LlamaContext, max_tokens: int) -> Sequence | None:
        """A sequence holding a copy of the context's cache, for an answer of at most max_tokens; None when no
        sequence is free, the cells left are too few, or the context's cache cannot be copied (another type)."""
        cells = min(context.n_ctx, context.n_past + max_tokens)
        if not self._free or self._reserved + cells > self.shared.n_ctx or context.cache_type != self.shared.cache_type:
            return None
        index = self._free.pop(0)
        if not self.shared.load_sequence_state(context.sequence_state(), index):
            self.shared.remove_sequence(index)
            self._free.append(index)
            return None
        sequence = Sequence(self, context, index, cells)
        self._joined.append(sequence)
        self._reserved += cells
        return sequence

    def step(self) -> int:
        """Decode every queued token in one llama_decode (counted as decoding); how many (nothing queued: 0)."""
        waiting = [sequence for sequence in self._joined if sequence.pending is not None]
        if not waiting:
            return 0
        started = time.perf_counter()
        self.shared.decode_step([(sequence.pending, sequence.n_past, sequence.index) for sequence in waiting])
        for row, sequence in enumerate(waiting):
            sequence.row = row
            sequence.n_past += 1
            sequence.pending = None
        counters = self.engine.counters
        counters.generated_tokens += len(waiting)
        counters.decode_seconds += time.perf_counter() - started
        return len(waiting)

    def leave(self, sequence: Sequence) -> None:
        """The sequence's cache copied back into its conversation's context (a token queued but not decoded is
        dropped), and its place freed; safe to call twice."""
        if sequence not in self._joined:
            return
        self._joined.remove(sequence)
        try:
            if not sequence.context.freed:
                if not sequence.context.load_sequence_state(self.shared.sequence_state(sequence.index)):
                    sequence.context.clear()
                    raise SmolcliError("llama.cpp could not copy a decoded answer back into its conversation's context")
                sequence.context.n_past = sequence.n_past
        finally:
            self.shared.remove_sequence(sequence.index)
            self._free.append(sequence.index)
            self._reserved -= sequence.cells

    def close(self) -> None:
        """Free the shared context; safe to call twice."""
        self.shared.free()
