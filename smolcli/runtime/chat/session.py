"""A conversation over one Engine, in a context of its own: its KV cache keeps every turn, so a new turn evaluates
only itself, and other conversations of the same model (their own contexts) leave it where it was."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generator

from smolcli.errors import ContextFull, SmolcliError
from smolcli.models.smolvlm_video import VIDEO_MARKER, place_video
from smolcli.runtime.chat.prompting import first_turn, next_turn, place_images
from smolcli.runtime.decoding.batch_decoder import BatchDecoder
from smolcli.runtime.decoding.generation import Generation, GenerationLimits, drain, generate_pieces
from smolcli.runtime.decoding.utf8_guard import Utf8Guard
from smolcli.runtime.llama.context import LlamaContext
from smolcli.runtime.llama.context_size import chat_context_size, check_prompt_fits
from smolcli.runtime.llama.engine import Engine
from smolcli.runtime.video.video_prompt import VideoTurn, evaluate_video_prompt, tokenize_video_prompt
from smolcli.runtime.vision.images import RGBImage

CLEAR_HINT = "start over (/clear in chat), or a new conversation with a larger {ctx}"


@dataclass
class Message:
    role: str  # "user" or "assistant"
    content: str
    images: list[str] = field(default_factory=list)  # where each image came from
    finish_reason: str | None = None
    video: str | None = None  # where the turn's clip came from


@dataclass(frozen=True)
class ParkedState:
    """A parked conversation: its sequence's saved state and the context it came from."""

    state: memoryview
    n_past: int
    n_ctx: int
    cache_type: str


@dataclass(frozen=True)
class TurnStats:
    prompt_tokens: int  # what this turn evaluated: its own text and new images, never earlier ones
    image_tokens: int
    completion_tokens: int


class ChatSession:
    def __init__(
        self,
        engine: Engine,
        sampler,
        limits: GenerationLimits,
        system: str | None = None,
        n_ctx: int | None = None,
        before_context: Callable[[int], str | None] | None = None,
    ):
        self.engine = engine
        self.sampler = sampler
        self.limits = limits
        self.system = system
        self.requested_ctx = n_ctx
        self.before_context = before_context  # n_ctx -> the KV-cache type (None: the engine's); may refuse
        self.context: LlamaContext | None = None  # made for the first turn, sized to it unless n_ctx was given
        self.messages: list[Message] = []
        self.pending_images: list[RGBImage] = []
        self.pending_video: VideoTurn | None = None  # a clip for the next message, its frames decoded
        self.turns: list[TurnStats] = []  # every answered turn since start, /clear included
        self.parked: ParkedState | None = None  # the context's cache while it is freed between turns (park())

    def attach(self, image: RGBImage) -> None:
        """The image goes with the next message."""
        self.pending_images.append(image)

    def clear(self) -> None:
        self.messages.clear()
        self.pending_images.clear()
        self.pending_video = None
        if self.parked is not None:  # nothing to restore: the next turn makes a context of the same size
            self.requested_ctx, self.parked = self.parked.n_ctx, None
        if self.context is not None:
            self.context.clear()

    @property
    def n_past(self) -> int:
        if self.parked is not None:
            return self.parked.n_past
        return self.context.n_past if self.context is not None else 0

    @property
    def n_ctx(self) -> int | None:
        """The context's size, parked or not (None before the first turn makes it)."""
        if self.parked is not None:
            return self.parked.n_ctx
        return self.context.n_ctx if self.context is not None else None

    @property
    def state_bytes(self) -> int:
        """What the conversation holds as a saved state: parked, or what park() would copy out now (0 for none)."""
        if self.parked is not None:
            return self.parked.state.nbytes
        context = self.context
        return context.sequence_state_size() if context is not None and context.n_past else 0

    def park(self) -> int:
        """Between turns: the context's cache copied out as its sequence's saved state (bytes proportional to the
        tokens it holds) and the context freed; the next turn (or replay) restores it into a new context of the same
        size and cache type, with the same answers as if it had stayed. Returns the state's bytes."""
        context = self.context
        if context is None or context.n_past == 0:
            return self.state_bytes
        state = context.sequence_state()
        self.parked = ParkedState(state, context.n_past, context.n_ctx, context.cache_type)
        context.free()
        self.context = None
        return state.nbytes

    def close(self) -> None:
        """Free the context (and a parked state); the engine stays loaded."""
        self.parked = None
        if self.context is not None:
            self.context.free()
            self.context = None

    def send(self, text: str, on_text: Callable[[str], None] | None = None, logprobs: int | None = None) -> Generation:
        """One user turn and the streamed answer. On any failure the cache and history are as before."""
        return drain(self.stream(text, logprobs), on_text)

    def stream(
        self,
        text: str,
        logprobs: int | None = None,
        guard: Utf8Guard | None = None,
        decoder: BatchDecoder | None = None,
    ) -> Generator[str, None, Generation]:
        """send() as a generator of the answer's text; a turn abandoned before its end leaves no trace. With a
        decoder, the answer is decoded beside others (generate_pieces says how)."""
        images, video = list(self.pending_images), self.pending_video
        rendered = self.render(text, len(images), video.text if video else None)
        try:
            prompt = self._tokenize(rendered, images, video)
        except SmolcliError as error:
            raise self.drop_images(error) from None
        try:
            context = self._ensure_context(prompt.n_tokens)
            start = context.n_past
            try:
                self._check_room(prompt.n_tokens, prompt.n_image_tokens)
                self._evaluate(prompt, video)
                prompt.free()
                answer = yield from generate_pieces(
                    self.engine, context, self.sampler, self.limits, logprobs, guard, decoder
                )
            except BaseException:
                # an interrupted or failed turn leaves no trace, so the next one starts clean
                context.rewind(start)
                raise
        except SmolcliError as error:
            raise self.drop_images(error) from None
        finally:
            prompt.free()
        self.turns.append(TurnStats(prompt.n_tokens, prompt.n_image_tokens, len(answer.tokens)))
        self.messages.append(Message("user", text, [image.source for image in images], video=_source(video)))
        self.messages.append(Message("assistant", answer.text, finish_reason=answer.finish_reason))
        self.pending_images.clear()
        self.pending_video = None
        return answer

    def render(self, text: str, n_images: int, clip_text: str | None = None, earlier: bool | None = None) -> str:
        """The user turn as the model reads it: images placed, the clip's text (FRAME_SLOTs) where it goes,
        and the first turn's system prompt or a later turn's closing of the answer before it."""
        content = place_images(text, n_images)
        if clip_text is not None:
            content = place_video(content)
        later = bool(self.messages) if earlier is None else earlier
        rendered = next_turn(content) if later else first_turn(content, self.system)
        return rendered.replace(VIDEO_MARKER, clip_text, 1) if clip_text is not None else rendered

    def _tokenize(self, text: str, images: list[RGBImage], video: VideoTurn | None, frames=None):
        """A Prompt, or with a clip a VideoPrompt (frames' global views in their slots); both have the same counts."""
        if video is None:
            return self.engine.tokenize(text, images)
        return tokenize_video_prompt(
            self.engine, video.vision, text, images, video.frames if frames is None else frames
        )

    def _evaluate(self, prompt, video: VideoTurn | None) -> None:
        if video is None:
            self.engine.evaluate(prompt, self.context)
        else:
            evaluate_video_prompt(self.engine, self.context, video.vision, prompt, video.progress)

    def replay(self, exchanges: list[tuple], reserve_tokens: int = 0) -> int:
        """Earlier turns (user text, its images, the answer given[, a VideoTurn]) into the cache without generating.

        For a client that sends the whole conversation each time (OpenAI's API): the history is
        evaluated once, as the turns would have left it, and the next turn goes on from there.
        The context is sized for the history plus `reserve_tokens`. Returns the tokens evaluated;
        on failure the cache and history are as before.
        """
        text, images, frames, video = "", [], [], None
        for user, user_images, answer, *clip in exchanges:
            clip_turn = clip[0] if clip else None
            text += self.render(
                user, len(user_images), clip_turn.text if clip_turn else None, bool(self.messages or text)
            )
            text += " " + answer
            images += user_images
            if clip_turn is not None:
                frames += clip_turn.frames
                video = clip_turn  # every clip of a model has the same frame vision context
        prompt = self._tokenize(text, images, video, frames)
        try:
            context = self._ensure_context(prompt.n_tokens + reserve_tokens)
            start = context.n_past
            try:
                self._check_room(prompt.n_tokens, prompt.n_image_tokens)
                self._evaluate(prompt, video)
            except BaseException:
                context.rewind(start)
                raise
        finally:
            prompt.free()
        for user, user_images, answer, *clip in exchanges:
            source = _source(clip[0]) if clip else None
            self.messages.append(Message("user", user, [image.source for image in user_images], video=source))
            self.messages.append(Message("assistant", answer))
        return prompt.n_tokens

    def drop_images(self, error: SmolcliError) -> SmolcliError:
        """A refused turn's images and clip go with it: kept attached, they would fail every later message too."""
        if self.pending_video is not None:
            self.pending_video = None
            error.message += " (the video attached to it was dropped)"
        if self.pending_images:
            count = len(self.pending_images)
            self.pending_images.clear()
            what = "the image attached to it was" if count == 1 else f"the {count} images attached to it were"
            error.message += f" ({what} dropped)"
        return error

    def _ensure_context(self, first_turn_tokens: int) -> LlamaContext:
        if self.parked is not None:
            self._resume()
        if self.context is None:
            n_ctx = self.requested_ctx or chat_context_size(
                first_turn_tokens, self.limits.max_tokens, self.engine.n_ctx_train
            )
            cache_type = self.before_context(n_ctx) if self.before_context is not None else None
            self.context = self.engine.new_context(n_ctx, cache_type)
        return self.context

    def _resume(self) -> None:
        """A parked conversation's state into a new context like the one it left."""
        parked = self.parked
        context = self.engine.new_context(parked.n_ctx, parked.cache_type)
        if not context.restore_state(parked.state, parked.n_past):
            context.free()
            raise SmolcliError(
                f"llama.cpp could not restore this conversation's saved state ({parked.n_past} tokens); "
                "start over (/clear in chat)"
            )
        self.context, self.parked = context, None

    def _check_room(self, n_tokens: int, image_tokens: int) -> None:
        context = self.context
        if context.n_past == 0:
            check_prompt_fits(n_tokens, image_tokens, context.n_ctx, "raise {ctx} or use fewer or smaller images")
            return
        try:
            context.check_fits(n_tokens + 1)
        except ContextFull:
            raise ContextFull(
                f"the context is full: this message needs {n_tokens} tokens but {context.n_ctx - context.n_past} "
                f"of {context.n_ctx} are left; {CLEAR_HINT}",
                n_past=context.n_past,
                n_new=n_tokens,
                n_ctx=context.n_ctx,
            ) from None

    def transcript(self) -> dict:
        return {
            "model": str(self.engine.files.model.path),
            "mmproj": str(self.engine.files.mmproj.path) if self.engine.files.mmproj else None,
            "system": self.system,
            "messages": [
                {key: value for key, value in vars(m).items() if value not in (None, [])} for m in self.messages
            ],
        }


def _source(video: VideoTurn | None) -> str | None:
    return video.source if video is not None else None
