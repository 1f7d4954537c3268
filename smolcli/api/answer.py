"""What a question gets back: the text, why it ended, token usage, timings and, when asked for, logprobs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Generator, Iterator

from smolcli.runtime.decoding.generation import Generation, TokenChoice
from smolcli.runtime.decoding.grammar import Constraint, parsed_answer
from smolcli.runtime.llama.counters import Counters
from smolcli.runtime.planning.peak_memory import peak_rss_bytes
from smolcli.runtime.vision.image_tiles import PREPROC_KEY


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int  # what this question evaluated, image tokens included
    image_tokens: int
    completion_tokens: int
    images_encoded: int  # image chunks (tiles) run through the vision encoder
    image_cache_hits: int  # image chunks whose embeddings came from the embedding cache instead


@dataclass(frozen=True)
class Timings:
    load_s: float  # loading the model or vision encoder for this question, and making its context
    image_encode_s: float
    prefill_s: float
    decode_s: float
    decode_tokens_per_s: float
    prefill_tokens_per_s: float


@dataclass(frozen=True)
class TopLogprob:
    id: int
    token: str
    logprob: float
    bytes: list[int]


@dataclass(frozen=True)
class TokenLogprob:
    """OpenAI's `logprobs.content` entry, plus the token id: what the model computed for one generated token."""

    id: int
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]

    @classmethod
    def from_choice(cls, choice: TokenChoice) -> "TokenLogprob":
        top = [TopLogprob(i, _text(piece), logprob, list(piece)) for i, piece, logprob in choice.top]
        return cls(choice.id, _text(choice.piece), choice.logprob, list(choice.piece), top)


def _text(piece: bytes) -> str:
    return piece.decode("utf-8", "replace")


@dataclass(frozen=True)
class Answer:
    """One answer. `as_dict()` is what `smolcli ask --json` prints."""

    text: str
    finish_reason: str  # "stop": end of turn or a stop string; "length": max_tokens or a full context
    usage: Usage
    timings: Timings
    model: str
    mmproj: str | None
    image_longest_edge: int | None  # the size images were resized to before tiling
    n_ctx: int
    context_full: bool = False  # the context filled up before the answer ended
    logprobs: list[TokenLogprob] | None = None
    tokens: list[int] = field(default_factory=list)
    memory_plan: dict | None = None  # with max_memory: each part's planned size and the limit
    peak_memory_bytes: int = 0
    json: object = None  # with json_schema: the answer's value, validated against the schema
    video: dict | None = None  # with a video: its duration and the frames used, with their timestamps
    vision_engine: str | None = None  # with images: which encoder made their embeddings (mtmd, onnx-int8, ...)

    @property
    def vision_precision(self) -> str | None:
        """With images on the ONNX encoder: the precision that ran (int8, or fp32 asked or after int8's self-check;
        bf16 on OpenVINO)."""
        engine = self.vision_engine or ""
        runtime, _, precision = engine.partition("-")
        return precision if runtime in ("onnx", "openvino") and precision else None

    def __str__(self) -> str:
        return self.text

    def as_dict(self) -> dict:
        report = {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": dataclasses.asdict(self.usage),
            "timings": dataclasses.asdict(self.timings),
            "peak_memory_bytes": self.peak_memory_bytes,
            "model": self.model,
            "mmproj": self.mmproj,
            "image_longest_edge": self.image_longest_edge,
            "vision_engine": self.vision_engine,
            "vision_precision": self.vision_precision,
        }
        if self.json is not None:
            report["json"] = self.json
        if self.video is not None:
            report["video"] = self.video
        if self.logprobs is not None:
            report["logprobs"] = {"content": [dataclasses.asdict(entry) for entry in self.logprobs]}
        if self.memory_plan is not None:
            report["memory_plan"] = self.memory_plan
        return report


def answer_from(
    generation: Generation,
    engine,
    n_ctx: int,
    usage: Usage,
    timings: Timings,
    with_images: bool,
    memory_plan: dict | None,
    constraint: Constraint | None = None,
    max_tokens: int = 0,
) -> Answer:
    """The Answer of a finished generation on this engine, in a context of n_ctx; a structured one parsed and validated."""
    mmproj = engine.files.mmproj if with_images else None
    value = parsed_answer(generation.text, constraint, generation.cut_by, max_tokens) if constraint else None
    return Answer(
        text=generation.text,
        finish_reason=generation.finish_reason,
        usage=usage,
        timings=timings,
        model=str(engine.files.model.path),
        mmproj=str(mmproj.path) if mmproj else None,
        image_longest_edge=mmproj.metadata.get(PREPROC_KEY) if mmproj else None,
        n_ctx=n_ctx,
        context_full=generation.context_full,
        logprobs=None if generation.logprobs is None else [TokenLogprob.from_choice(c) for c in generation.logprobs],
        tokens=list(generation.tokens),
        memory_plan=memory_plan,
        peak_memory_bytes=peak_rss_bytes(),
        json=value,
        vision_engine=engine.vision_engine if with_images else None,
    )


def _per_second(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


def usage_and_timings(done: Counters, prompt_tokens: int, image_tokens: int, completion_tokens: int, load_s: float):
    usage = Usage(prompt_tokens, image_tokens, completion_tokens, done.images_encoded, done.cache_hits)
    timings = Timings(
        load_s=round(load_s, 6),
        image_encode_s=round(done.encode_seconds, 6),
        prefill_s=round(done.prefill_seconds, 6),
        decode_s=round(done.decode_seconds, 6),
        decode_tokens_per_s=_per_second(done.generated_tokens, done.decode_seconds),
        prefill_tokens_per_s=_per_second(prompt_tokens, done.prefill_seconds),
    )
    return usage, timings


class AnswerStream:
    """The answer's text piece by piece as it is generated; `answer` holds the whole Answer once it has ended.

    Iterating to the end is what generates the answer: a stream left unfinished ends there.
    """

    def __init__(self, pieces: Generator[str, None, Generation], finish):
        self._pieces = pieces
        self._finish = finish  # Generation -> Answer
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        while self.answer is None:
            try:
                yield next(self._pieces)
            except StopIteration as ended:
                self.answer = self._finish(ended.value)

    def close(self) -> None:
        """Stop generating here: a chat's unfinished turn leaves no trace, and `answer` stays None.

        Dropping an unfinished stream would undo its turn later, whenever it is collected: a server
        that cancels a generation closes it at once instead.
        """
        self._pieces.close()

    def read(self) -> Answer:
        """Generate the rest, and return the whole Answer."""
        for _ in self:
            pass
        return self.answer
