"""The decode loop: sample, feed back, and stream the answer's text as it becomes final."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Callable, Generator

import numpy as np

from smolcli.errors import BadInput, ContextFull
from smolcli.runtime.decoding.batch_decoder import BatchDecoder
from smolcli.runtime.decoding.utf8_guard import Utf8Guard
from smolcli.runtime.llama.context import LlamaContext
from smolcli.runtime.llama.engine import Engine


@dataclass(frozen=True)
class GenerationLimits:
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # exactly max_tokens tokens, for benchmarks

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise BadInput(f"{{max_tokens}} must be at least 1, not {self.max_tokens}")
        if any(not s for s in self.stop):
            raise BadInput("{stop} needs a non-empty string")


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop": end of turn or a stop string; "length": max_tokens or a full context
    tokens: list[int] = field(default_factory=list)
    context_full: bool = False
    logprobs: list[TokenChoice] | None = None  # one per token, when asked for
    stop_string_cut: bool = False  # a stop string ended it (finish_reason "stop" says only that it stopped)

    @property
    def cut_by(self) -> str | None:
        """What ended the answer before the model did: "stop", "ctx" or "max_tokens" (the settings); None if nothing."""
        if self.stop_string_cut:
            return "stop"
        if self.finish_reason == "length":
            return "ctx" if self.context_full else "max_tokens"
        return None


class AnswerText:
    """Token bytes in, final text out: whole UTF-8 characters only, stop strings held back.

    A token can end inside a multi-byte character, and a stop string can start in one
    token and end in a later one, so text is released only once neither can change it.
    """

    def __init__(self, stop: tuple[str, ...] = (), strip_leading_space: bool = True):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = stop
        # The prompt ends with "Assistant:" and the format puts one space after it.
        self._strip_space = strip_leading_space
        self._held = ""
        self.text = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """The text that became final; sets `stopped` when a stop string completed."""
        self._held += self._decoder.decode(data)
        if self._strip_space and self._held:
            self._held = self._held.removeprefix(" ")
            self._strip_space = False
        cut = min((i for i in (self._held.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._release(cut, drop_rest=True)
        return self._release(len(self._held) - self._partial_stop_length())

    def finish(self) -> str:
        """The end of the answer: release what was held back for a stop string that never came."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(b"", final=True)
        return self._release(len(self._held))

    def _partial_stop_length(self) -> int:
        """Length of the longest end of the held text that could begin a stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self._held)), longest, -1):
                if self._held.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _release(self, size: int, drop_rest: bool = False) -> str:
        released, self._held = self._held[:size], ("" if drop_rest else self._held[size:])
        self.text += released
        return released


@dataclass(frozen=True)
class TokenChoice:
    """One generated token and the likeliest alternatives at its position, from the model's raw logits."""

    id: int
    piece: bytes  # the token's bytes (a token can end inside a UTF-8 character)
    logprob: float
    top: tuple[tuple[int, bytes, float], ...] = ()  # (id, bytes, logprob), likeliest first


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - float(np.max(logits))
    return shifted - np.log(np.exp(shifted).sum())


def token_choice(engine: Engine, token: int, n_top: int, logits: np.ndarray) -> TokenChoice:
    """The token's log-probability under the model's raw logits at its position."""
    logprobs = log_softmax(logits)
    top: tuple = ()
    if n_top > 0:
        ids = np.argpartition(-logprobs, min(n_top, len(logprobs) - 1))[:n_top]
        ids = ids[np.argsort(-logprobs[ids], kind="stable")]
        top = tuple((int(i), engine.piece(int(i)), float(logprobs[i])) for i in ids)
    return TokenChoice(token, engine.piece(token), float(logprobs[token]), top)


def generate_pieces(
    engine: Engine,
    context: LlamaContext,
    sampler,
    limits: GenerationLimits,
    logprobs: int | None = None,
    guard: Utf8Guard | None = None,
    decoder: BatchDecoder | None = None,
) -> Generator[str, None, Generation]:
    """Continue from the prompt evaluated in `context`, feeding each kept token back, so its cache holds the answer.

    Yields the answer's text as it becomes final; returns the whole Generation. With `logprobs`
    (0 or more alternatives), each generated token's log-probability is kept as well. A guard
    (with a grammar) masks the tokens that would make the answer invalid UTF-8 before each choice.

    With a decoder, the context's sequence joins it (alone in its own context when the decoder has no room) and
    the generator yields once after every token fed back, an empty piece when no text became final: whoever
    drives several generations steps the decoder between two rounds of next() (see batch_decoder.py).
    """
    sequence = decoder.join(context, limits.max_tokens) if decoder is not None else None
    source = sequence or context  # where the logits come from and the tokens go
    answer = AnswerText(limits.stop)
    tokens: list[int] = []
    choices: list[TokenChoice] | None = [] if logprobs is not None else None
    finish_reason, context_full = "length", False
    try:
        while len(tokens) < limits.max_tokens:
            raw = source.last_logits() if guard is not None and choices is not None else None  # before the mask
            if guard is not None:
                guard.mask(source.logits_view())
            token = sampler.sample(source.logits_view())
            if engine.is_end(token) and not limits.ignore_eos:
                finish_reason = "stop"
                break
            tokens.append(token)
            if choices is not None:
                choices.append(token_choice(engine, token, logprobs, source.last_logits() if raw is None else raw))
            piece = engine.piece(token)
            if guard is not None:
                guard.advance(piece)
            released = answer.feed(piece)
            if released and decoder is None:
                yield released
            if answer.stopped:
                finish_reason = "stop"
            else:
                try:
                    source.accept(token)
                except ContextFull:
                    context_full = True
            if decoder is not None and (released or not (answer.stopped or context_full)):
                yield released  # one piece per token fed back: the decoder steps before the next
            if answer.stopped or context_full:
                break
        tail = answer.finish()
        if tail:
            yield tail
    finally:
        if sequence is not None:
            decoder.leave(sequence)  # its cache, answer included, back in the context
    return Generation(answer.text, finish_reason, tokens, context_full, choices, answer.stopped)


def generate(
    engine: Engine,
    context: LlamaContext,
    sampler,
    limits: GenerationLimits,
    on_text: Callable[[str], None] | None = None,
    logprobs: int | None = None,
    guard: Utf8Guard | None = None,
) -> Generation:
    """generate_pieces(), each piece handed to on_text as it comes."""
    return drain(generate_pieces(engine, context, sampler, limits, logprobs, guard), on_text)


def drain(pieces: Generator[str, None, Generation], on_text: Callable[[str], None] | None = None) -> Generation:
    """Run a generator of answer pieces to its end, handing each piece to on_text; its Generation."""
    while True:
        try:
            piece = next(pieces)
        except StopIteration as finished:
            return finished.value
        if on_text is not None:
            on_text(piece)
