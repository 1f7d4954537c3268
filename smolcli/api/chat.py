"""`Model.chat()`: a conversation whose turns stay in the KV cache, over the model's one engine.

Each Chat has a llama.cpp context of its own (the weights and the vision encoder are shared),
so asking the model something between two turns leaves the conversation where it was. A Chat kept
idle for long (a server's, between requests) can park() instead: its context freed, its cache kept
as the sequence's saved state, and restored by its next turn.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Callable, Sequence

from smolcli.api.answer import Answer, AnswerStream
from smolcli.api.chat_video import attach_clip, frames_budget, replayed_clip
from smolcli.api.memory import CHAT_FIRST_MESSAGE_TOKENS
from smolcli.api.options import GenerationSettings, settings_from
from smolcli.api.turn import Turn, checked_constraint, with_video
from smolcli.api.video import ClipRequest
from smolcli.errors import BadInput
from smolcli.runtime.chat.session import ChatSession, Message, TurnStats
from smolcli.runtime.decoding.batch_decoder import BatchDecoder
from smolcli.runtime.decoding.sampling import Sampler
from smolcli.runtime.llama.context_size import chat_context_size
from smolcli.runtime.vision.images import RGBImage, image_from
from smolcli.util.report import quiet

if TYPE_CHECKING:
    from smolcli.api.model import Model


class Chat:
    """Made by Model.chat(). Generation settings (GenerationSettings' fields) hold for every turn."""

    def __init__(
        self,
        model: "Model",
        system: str | None = None,
        images: Sequence | None = None,
        *,
        ctx: int | None = None,
        **generation,
    ):
        self.model = model
        pair = self._pair = model.pair
        self._vision = None  # the mmproj this conversation's images are tiled by, fixed by its first images
        settings = settings_from(GenerationSettings, generation, "Model.chat()")
        settings.constraint()  # a schema given for every turn is checked now
        self._settings = settings
        limits = settings.limits()
        self._sampler = Sampler(settings.sampling())
        self._memory_plan = None
        first_images = [image_from(item) for item in images or ()]
        n_ctx = ctx or pair.options.ctx
        if first_images:
            self._vision = pair.vision_for(first_images)
        self._budget = pair.memory_budget(self._vision, first_images, vision_first=not pair.loaded)
        if self._budget:
            # planned before anything loads: the context is fixed now, from the first message's images
            tokens = self._budget.image_tokens + CHAT_FIRST_MESSAGE_TOKENS
            n_ctx = n_ctx or chat_context_size(tokens, settings.max_tokens, self._budget.n_ctx_train)
            self._memory_plan = self._budget.plan(n_ctx)
        self._plan_engine = self._memory_plan.vision_engine if self._memory_plan else None
        self._session = ChatSession(None, self._sampler, limits, system, n_ctx, before_context=self._before_context)
        self._session.pending_images.extend(first_images)

    # --- state ---------------------------------------------------------------------------

    @property
    def settings(self) -> GenerationSettings:
        """How this conversation's answers are generated."""
        return self._settings

    @property
    def messages(self) -> list[Message]:
        return self._session.messages

    @property
    def turns(self) -> list[TurnStats]:
        """What each answered turn evaluated: its own text and new images, never earlier ones."""
        return self._session.turns

    @property
    def memory_plan(self) -> dict | None:
        return self._budget.report(self._memory_plan) if self._memory_plan else None

    @property
    def n_ctx(self) -> int | None:
        """The size of this conversation's context, parked or not (None before its first turn makes it)."""
        return self._session.n_ctx

    @property
    def parked(self) -> bool:
        """Parked (park()): its context freed, its cache held as a saved state until the next turn."""
        return self._session.parked is not None

    @property
    def parked_bytes(self) -> int:
        """The saved state a parked conversation holds (0 when not parked): in every later plan with max_memory."""
        parked = self._session.parked
        return parked.state.nbytes if parked is not None else 0

    @property
    def state_bytes(self) -> int:
        """What this conversation holds as a saved state: parked_bytes, or what park() would take now."""
        return self._session.state_bytes

    def park(self) -> int:
        """Free this conversation's context between turns, keeping its KV cache as the sequence's saved state: bytes
        proportional to the tokens it holds, where an idle context costs its full size. The next send() (or
        replay()) restores it into a new context of the same size and goes on as if it had stayed: same answers,
        same log-probabilities, only the new message evaluated. Returns the state's bytes (0 before a first turn)."""
        return self._session.park()

    @property
    def n_past(self) -> int:
        return self._session.n_past

    def attach(self, image) -> None:
        """An image (path, bytes or PIL image) for the next message."""
        picture = image_from(image)
        self._pin_vision([picture])
        self._session.pending_images.append(picture)

    def clear(self) -> None:
        """Start a new conversation (the context is kept, emptied; a parked state is dropped)."""
        self._session.clear()

    def transcript(self) -> dict:
        files = self._pair.files
        return {
            "model": str(files.model.path),
            "mmproj": str(self._vision.path) if self._vision else (str(files.mmproj.path) if files.mmproj else None),
            "system": self._session.system,
            "messages": [{k: v for k, v in vars(m).items() if v not in (None, [])} for m in self._session.messages],
        }

    def configure(self, **generation) -> None:
        """New generation settings (GenerationSettings' fields) for the turns that follow.

        A server keeps one Chat per conversation while each request brings its own max_tokens,
        temperature or stop strings.
        """
        settings = settings_from(GenerationSettings, generation, "Chat.configure()")
        limits, sampler = settings.limits(), Sampler(settings.sampling())
        if self._sampler is not None:
            self._sampler.close()
        self._settings, self._sampler = settings, sampler
        self._session.sampler, self._session.limits = sampler, limits

    def replay(
        self,
        exchanges: Sequence[tuple],
        reserve_tokens: int = 0,
        *,
        fps: float | None = None,
        max_frames: int | None = None,
    ) -> int:
        """Earlier turns, each (user text, its images, the answer it got[, its video]), into the KV cache without generating.

        For a client that sends the whole conversation (OpenAI's API) when this Chat has not seen
        it: the next send() goes on from there. The context gets room for `reserve_tokens` more
        than the history (the next message, roughly). A video (path or bytes, or None) is sampled
        as send() samples it (`fps`, `max_frames`: as that turn had them). Returns the tokens evaluated.
        """
        turns = [
            (text, [image_from(item) for item in images], answer, *clip) for text, images, answer, *clip in exchanges
        ]
        pictures = [picture for _, turn_images, *_ in turns for picture in turn_images]
        if pictures:
            self._pin_vision(pictures)
        engine = self._pair.engine
        self._session.engine = engine
        if pictures:
            engine.use_mmproj(self._vision, mtmd_only=self._plan_engine == "mtmd")
        replayed = []
        for text, turn_images, answer, *clip in turns:
            video = clip[0] if clip else None
            replayed.append(
                (text, turn_images, answer, replayed_clip(self._pair, ClipRequest(video, fps, max_frames, quiet)))
                if video is not None
                else (text, turn_images, answer)
            )
        return self._session.replay(replayed, reserve_tokens)

    # --- turns ---------------------------------------------------------------------------

    def send(
        self,
        text: str,
        images: Sequence | None = None,
        *,
        stream: bool = False,
        logprobs: int | None = None,
        json_schema: dict | None = None,
        grammar: str | None = None,
        video=None,
        fps: float | None = None,
        max_frames: int | None = None,
        report: Callable[[str], None] = quiet,
        decoder: BatchDecoder | None = None,
    ) -> Answer | AnswerStream:
        """One user turn: its answer, or with stream=True an AnswerStream of its text.

        A turn that fails or is interrupted leaves the conversation as it was before it. With
        json_schema (or grammar) this turn's answer is held to it, as in Model.ask. `video` (a
        path, '-' or the file's bytes) goes with this turn as in Model.ask(video=...): its frames
        stay in the conversation for the turns after it; `report` gets the frames' progress lines.
        `decoder` (Model.batch_decoder()): the answer is decoded beside other conversations', its stream
        giving one piece per token (empty when no text became final), to be stepped as batch_decoder.py says.
        """
        settings = self._settings  # the chat's own, for every turn, unless this turn brings a grammar
        if json_schema is not None or grammar is not None:
            settings = dataclasses.replace(self._settings, json_schema=json_schema, grammar=grammar)
        constraint = checked_constraint(settings, logprobs)
        for image in images or ():
            self.attach(image)
        if not text.strip() and not self._session.pending_images and video is None:
            raise BadInput("the message is empty")
        was_loaded = self._pair.loaded
        pending = list(self._session.pending_images)
        vision = self._vision if pending else None
        ready = self._pair.ready(vision, pending, self._plan_engine == "mtmd")
        engine, load_seconds = ready.engine, ready.load_seconds
        self._session.engine = engine
        clip = None
        if video is not None:
            attaching = time.perf_counter()
            request = ClipRequest(video, fps, max_frames, report)
            budget = lambda: frames_budget(self._pair, self._budget, self._memory_plan)  # noqa: E731
            clip = attach_clip(self._pair, self._session, engine, text, request, self._settings.max_tokens, budget)
            if was_loaded:  # a loaded model's load time is this turn's setup: the clip's vision context too
                load_seconds += time.perf_counter() - attaching
        had_context = self._session.context is not None or self.parked  # a parked one's restore counts as prefill
        # the conversation's first turn makes its context: its load time is this turn's
        turn = Turn(engine, self._settings, constraint, logprobs, 0.0 if had_context else load_seconds)
        turn.with_images = True
        turn.count_encoded_ahead(ready.encoded_ahead_seconds)
        turn.memory_report = clip.memory_report if clip is not None and clip.memory_report else self.memory_plan
        if clip is not None:
            turn.amend = lambda answer: with_video(answer, clip.summary())
        # a grammar holds state as the answer grows: a fresh sampler for each turn it constrains
        turn_sampler = turn.sampler() if constraint is not None else None
        self._session.sampler = turn_sampler or self._sampler
        pieces = self._session.stream(text, logprobs, turn.guard(), decoder)

        def counts(_generation) -> tuple[int, int, int]:
            done = self._session.turns[-1]
            return done.prompt_tokens, done.image_tokens, done.completion_tokens

        return turn.answer(pieces, lambda: self._session.context, counts, stream, turn_sampler and turn_sampler.close)

    def _pin_vision(self, images: list[RGBImage]) -> None:
        if self._vision is None:
            self._vision = self._pair.vision_for(images)

    def _before_context(self, _n_ctx: int) -> str:
        # the KV-cache type of this conversation's context: the memory plan's, or the model's setting
        return self._memory_plan.cache_type if self._memory_plan else (self._pair.options.cache_type or "f16")

    def close(self) -> None:
        """Free this conversation's context; the model stays loaded."""
        if self._sampler is not None:
            self._session.close()
            self._sampler.close()
            self._sampler = None
            self._pair.forget(self)

    def __enter__(self) -> "Chat":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
