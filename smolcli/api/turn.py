"""One question's way from an evaluated prompt to an Answer, shared by Model.ask (images or a clip) and Chat.send.

The pipeline: check the question (its grammar and logprobs), get the engine ready (api/loaded_pair.py), start a
Turn (the counters' snapshot), build and evaluate the prompt in the conversation's context, then Turn.answer():
sampling under the grammar and the UTF-8 guard, and the Answer with its usage, timings and memory plan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Generator

from smolcli.api.answer import Answer, AnswerStream, answer_from, usage_and_timings
from smolcli.api.options import GenerationSettings
from smolcli.errors import BadInput
from smolcli.runtime.decoding.generation import Generation, generate_pieces
from smolcli.runtime.decoding.grammar import Constraint
from smolcli.runtime.decoding.sampling import Sampler
from smolcli.runtime.decoding.utf8_guard import Utf8Guard
from smolcli.runtime.llama.context import LlamaContext
from smolcli.runtime.llama.engine import Engine
from smolcli.runtime.vision.images import RGBImage


@dataclass(frozen=True)
class Question:
    """One question to the Model, checked: its text, system prompt and images (read), how to answer it."""

    prompt: str
    system: str | None
    pictures: list[RGBImage]
    settings: GenerationSettings
    constraint: Constraint | None
    logprobs: int | None
    stream: bool
    store_prefix: bool = True  # False: an image prompt's prefix state is read from the prefix cache, never written


def checked_constraint(settings: GenerationSettings, logprobs: int | None) -> Constraint | None:
    """The grammar an answer must follow (a schema it cannot enforce is refused before anything runs), after
    checking the logprobs asked for."""
    constraint = settings.constraint()
    if logprobs is not None and logprobs < 0:
        raise BadInput(f"{{logprobs}} must be 0 or more alternatives, not {logprobs}")
    return constraint


@dataclass(frozen=True)
class PromptCounts:
    """What a turn evaluated: its tokens, its image tokens among them."""

    n_tokens: int
    n_image_tokens: int


@dataclass
class Turn:
    """One question on a ready engine; made just before the question's own work, so that its counters count it.

    with_images, memory_report and amend are filled in as the question learns them: whether the Answer names
    the mmproj and vision engine, the memory plan it ran under, and what one kind of question adds to its
    Answer (a clip's summary).
    """

    engine: Engine
    settings: GenerationSettings
    constraint: Constraint | None
    logprobs: int | None
    load_seconds: float
    with_images: bool = False
    memory_report: dict | None = None
    amend: Callable[[Answer], Answer] | None = None

    def __post_init__(self) -> None:
        self.before = self.engine.counters.snapshot()

    def count_encoded_ahead(self, seconds: float) -> None:
        """Images encoded before the engine loaded are this question's encoding."""
        self.engine.counters.encode_seconds += seconds

    def sampler(self) -> Sampler:
        """A sampler for this turn: a grammar holds state as the answer grows, so a fresh one per turn."""
        return Sampler(self.settings.sampling(), self.constraint.gbnf if self.constraint else None, self.engine.vocab)

    def guard(self) -> Utf8Guard | None:
        """Under a grammar: the mask that keeps the answer valid UTF-8."""
        return Utf8Guard(self.engine.utf8_vocabulary()) if self.constraint else None

    def generate(self, context: LlamaContext, prompt: PromptCounts, stream: bool) -> Answer | AnswerStream:
        """Sample the answer to a prompt evaluated in `context`, with a sampler of its own."""
        sampler = self.sampler()
        pieces = generate_pieces(self.engine, context, sampler, self.settings.limits(), self.logprobs, self.guard())
        counts = lambda generation: (prompt.n_tokens, prompt.n_image_tokens, len(generation.tokens))  # noqa: E731
        return self.answer(pieces, context, counts, stream, sampler.close)

    def answer(
        self,
        pieces: Generator[str, None, Generation],
        context: LlamaContext | Callable[[], LlamaContext],
        counts: Callable[[Generation], tuple[int, int, int]],
        stream: bool,
        done: Callable[[], None] | None = None,
    ) -> Answer | AnswerStream:
        """The Answer (or its stream) of a generator of answer pieces. counts(generation): the prompt's tokens,
        its image tokens and the answer's; context: the one it ran in (or what gives it once the pieces end,
        for a chat whose first turn makes it); done: called first when it ends (a turn sampler's close)."""

        def finish(generation: Generation) -> Answer:
            if done is not None:
                done()
            ran_in = context if isinstance(context, LlamaContext) else context()
            prompt_tokens, image_tokens, completion_tokens = counts(generation)
            spent = self.engine.counters.since(self.before)
            usage, timings = usage_and_timings(spent, prompt_tokens, image_tokens, completion_tokens, self.load_seconds)
            answer = answer_from(
                generation,
                self.engine,
                ran_in.n_ctx,
                usage,
                timings,
                self.with_images,
                self.memory_report,
                self.constraint,
                self.settings.max_tokens,
            )
            return self.amend(answer) if self.amend else answer

        answer = AnswerStream(pieces, finish)
        return answer if stream else answer.read()


def with_video(answer: Answer, summary: dict, mmproj: str | None = None) -> Answer:
    """A clip's Answer: its summary, and (for a question about a clip) the mmproj its frames went through."""
    extra = {"video": summary} if mmproj is None else {"video": summary, "mmproj": mmproj}
    return dataclasses.replace(answer, **extra)
