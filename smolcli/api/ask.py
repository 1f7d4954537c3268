"""Model.ask: one pipeline for every kind of question, its input (images, or a clip with images beside it) laid
out as a prompt, the model's own context sized (and, with max_memory, planned) to it, the prompt evaluated there,
and the answer sampled through the shared turn (api/turn.py).

An input kind says what differs: how the engine gets ready, how the prompt is built and checked, the context's
size and KV-cache type, how the prompt goes in, and what the Answer adds (a clip's summary).
"""

from __future__ import annotations

import time

from smolcli.api.answer import Answer, AnswerStream
from smolcli.api.loaded_pair import LoadedPair
from smolcli.api.memory import MemoryBudget
from smolcli.api.turn import PromptCounts, Question, Turn, with_video
from smolcli.api.video import (
    ClipFrames,
    ClipRequest,
    FrameRoom,
    clip_sampling,
    frame_progress,
    read_clip,
    warn_if_not_trained_on_video,
)
from smolcli.models.smolvlm_video import VIDEO_MARKER, place_video, video_text
from smolcli.runtime.chat.prompting import first_turn, place_images
from smolcli.runtime.llama.context import LlamaContext
from smolcli.runtime.llama.context_size import ask_context_size, check_prompt_fits
from smolcli.runtime.video.video_prompt import evaluate_video_prompt, tokenize_video_prompt


def ask_question(pair: LoadedPair, question: Question, clip: ClipRequest | None = None) -> Answer | AnswerStream:
    """The answer to a checked question; `clip`: a video goes with it."""
    kind = ClipInput(pair, question, clip) if clip is not None else ImagesInput(pair, question)
    turn = kind.start()
    prompt = kind.prompt(turn)
    try:
        context = kind.context(prompt, turn)
        kind.evaluate(prompt, context)
    finally:
        prompt.free()
    return turn.generate(context, PromptCounts(prompt.n_tokens, prompt.n_image_tokens), question.stream)


class ImagesInput:
    """Text and zero or more images: a first question on a model not loaded yet may encode its images before
    the language model loads (LoadedPair.ready)."""

    def __init__(self, pair: LoadedPair, question: Question):
        self.pair, self.question = pair, question
        self.budget: MemoryBudget | None = None
        self.chosen: str | None = None  # under max_memory: the vision engine the plan fits with

    def start(self) -> Turn:
        pair, question = self.pair, self.question
        pictures = question.pictures
        vision = pair.vision_for(pictures)
        self.budget = pair.memory_budget(vision, pictures, vision_first=not pair.loaded, reuse_prefix=True)
        if self.budget:
            # before loading: the images' tokens alone give a context no larger than the real one
            max_tokens = question.settings.max_tokens
            n_ctx = pair.options.ctx or ask_context_size(self.budget.image_tokens, max_tokens, self.budget.n_ctx_train)
            self.chosen = self.budget.plan(n_ctx).vision_engine
        ready = pair.ready(vision, pictures, self.chosen == "mtmd")
        turn = Turn(ready.engine, question.settings, question.constraint, question.logprobs, ready.load_seconds)
        turn.with_images = bool(pictures)
        turn.count_encoded_ahead(ready.encoded_ahead_seconds)
        return turn

    def prompt(self, turn: Turn):
        text = first_turn(place_images(self.question.prompt, len(self.question.pictures)), self.question.system)
        return turn.engine.tokenize(text, self.question.pictures)

    def context(self, prompt, turn: Turn) -> LlamaContext:
        """The model's context for this prompt (making it counts as the question's load time), the prompt checked
        against it."""
        pair, engine = self.pair, turn.engine
        started = time.perf_counter()
        n_ctx = pair.options.ctx or ask_context_size(
            prompt.n_tokens, self.question.settings.max_tokens, engine.n_ctx_train
        )
        plan = self.budget.plan(n_ctx, self.chosen) if self.budget else None
        context = pair.ask_context(n_ctx, plan.cache_type if plan else (pair.options.cache_type or "f16"))
        turn.load_seconds += time.perf_counter() - started
        turn.memory_report = self.budget.report(plan) if plan else None
        fix = (
            "raise {ctx}"
            if pair.options.ctx
            else f"the model holds at most {engine.n_ctx_train} tokens; shorten the prompt"
        )
        check_prompt_fits(
            prompt.n_tokens, prompt.n_image_tokens, context.n_ctx, f"{fix} or use fewer or smaller images"
        )
        return context

    def evaluate(self, prompt, context: LlamaContext) -> None:
        self.pair.engine.evaluate(prompt, context, reuse_prefix=True, store_prefix=self.question.store_prefix)


class ClipInput:
    """A clip, laid out as SmolVLM2 was trained, with the question's images beside it: its frames are sampled and
    checked against the context (and the memory limit) before any is decoded, so a clip that cannot fit is
    refused at once with the number of frames that would."""

    def __init__(self, pair: LoadedPair, question: Question, request: ClipRequest):
        self.pair, self.question, self.request = pair, question, request
        self.clip: ClipFrames | None = None

    def start(self) -> Turn:
        pair, question = self.pair, self.question
        self.sampling = clip_sampling(pair, self.request.fps, self.request.max_frames)
        warn_if_not_trained_on_video(pair, self.request.report)
        self.content = place_video(place_images(question.prompt, len(question.pictures)))
        vision_images = pair.vision_for(question.pictures) if question.pictures else None
        self.budget = pair.memory_budget(vision_images or pair.files.mmproj, question.pictures)
        started = time.perf_counter()
        was_loaded = pair.loaded
        engine = pair.engine
        if vision_images is not None:
            engine.use_mmproj(vision_images)
        self.frames = pair.frame_vision()
        load_seconds = (time.perf_counter() - started) if was_loaded else engine.load_seconds
        turn = Turn(engine, question.settings, question.constraint, question.logprobs, load_seconds, with_images=True)
        mmproj = str(pair.files.mmproj.path)
        turn.amend = lambda answer: with_video(answer, self.clip.summary(), mmproj)
        return turn

    def n_ctx_for(self, tokens: int, engine) -> int:
        return self.pair.options.ctx or ask_context_size(tokens, self.question.settings.max_tokens, engine.n_ctx_train)

    def prompt(self, turn: Turn):
        question, engine, report, content = self.question, turn.engine, self.request.report, self.content

        def text_for(stamps: list[float], duration: float) -> str:
            return first_turn(content, question.system).replace(VIDEO_MARKER, video_text(stamps, duration), 1)

        limit = self.pair.options.ctx or engine.n_ctx_train
        extra = self.budget.image_tokens if self.budget else 0
        room = FrameRoom(
            limit, limit, question.settings.max_tokens, self.budget, lambda n: self.n_ctx_for(n, engine), extra
        )
        self.clip = read_clip(engine, self.frames, self.request.video, self.sampling, text_for, room, report)
        turn.memory_report = self.clip.memory_report
        text = first_turn(content, question.system).replace(VIDEO_MARKER, self.clip.text(), 1)
        return tokenize_video_prompt(engine, self.frames, text, question.pictures, self.clip.images)

    def context(self, prompt, turn: Turn) -> LlamaContext:
        plan = self.clip.memory_plan
        cache_type = plan.cache_type if plan else (self.pair.options.cache_type or "f16")
        context = self.pair.ask_context(self.n_ctx_for(prompt.n_tokens, turn.engine), cache_type)
        context.check_fits(prompt.n_tokens + 1)  # images beside the clip were not in the plan
        return context

    def evaluate(self, prompt, context: LlamaContext) -> None:
        progress = frame_progress(self.request.report, "encoding frame")
        evaluate_video_prompt(self.pair.engine, context, self.frames, prompt, progress)
