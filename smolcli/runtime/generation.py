"""The decode loop: sample, feed back, and stream the answer's text as it becomes final."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Callable

from smolcli.errors import SmolcliError
from smolcli.runtime.engine import ContextFull, Engine


@dataclass(frozen=True)
class GenerationLimits:
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # exactly max_tokens tokens, for benchmarks

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise SmolcliError(f"--max-tokens must be at least 1, not {self.max_tokens}")
        if any(not s for s in self.stop):
            raise SmolcliError("--stop needs a non-empty string")


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop": end of turn or a stop string; "length": max_tokens or a full context
    tokens: list[int] = field(default_factory=list)
    context_full: bool = False


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


def generate(
    engine: Engine,
    sampler,
    limits: GenerationLimits,
    on_text: Callable[[str], None] | None = None,
) -> Generation:
    """Continue from the evaluated prompt, feeding each kept token back, so the cache holds the answer."""
    answer = AnswerText(limits.stop)
    emit = on_text or (lambda _text: None)
    tokens: list[int] = []
    finish_reason, context_full = "length", False
    while len(tokens) < limits.max_tokens:
        token = engine.sample(sampler.handle)
        if engine.is_end(token) and not limits.ignore_eos:
            finish_reason = "stop"
            break
        tokens.append(token)
        released = answer.feed(engine.piece(token))
        if released:
            emit(released)
        if answer.stopped:
            finish_reason = "stop"
            break
        try:
            engine.accept(token)
        except ContextFull:
            context_full = True
            break
    tail = answer.finish()
    if tail:
        emit(tail)
    return Generation(answer.text, finish_reason, tokens, context_full)
