"""Model.ask with a video clip: frames planned, decoded, laid out as SmolVLM2 was trained, and answered.

The clip's frames come from the checkpoint's sampling rule, which `smolcli convert` writes into the mmproj
(else the releases': 1 frame a second, at most 64), each resized to the mmproj's longest edge and then one
tile's square, as transformers does; `fps` and `max_frames` override it. The context is sized for the frames before any is decoded, so a clip
that cannot fit is refused at once with the number of frames that would.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

from smolcli.api.answer import Answer
from smolcli.api.video_plan import check_frames_fit_context, check_frames_fit_memory, planned_tokens
from smolcli.errors import BadInput, ModelFileError
from smolcli.models.smolvlm_video import (
    VIDEO_FPS_KEY,
    VIDEO_MARKER,
    VIDEO_MAX_FRAMES_KEY,
    VIDEO_SIZE_KEY,
    place_video,
    video_text,
)
from smolcli.runtime.chat.prompting import first_turn, place_images
from smolcli.runtime.llama.context_size import ask_context_size
from smolcli.runtime.planning.memory_plan import MemoryPlan
from smolcli.runtime.video.clip import FrameProgress, VideoFrame, VideoPlan, VideoSampling, open_clip
from smolcli.runtime.video.video_prompt import (
    FrameVision,
    evaluate_video_prompt,
    frame_tokens_each,
    tokenize_video_prompt,
)
from smolcli.runtime.vision.image_tiles import tile_size_of
from smolcli.runtime.vision.images import RGBImage

RELEASE_FPS = 1.0  # every SmolVLM2 release's preprocessor_config.json video_sampling (when the mmproj has none)
RELEASE_MAX_FRAMES = 64
PROGRESS_AFTER_S = 1.0  # frames taking longer than this show "frame i of N" lines on stderr
PROGRESS_AFTER_VARIABLE = "SMOLCLI_PROGRESS_AFTER_S"  # tests set it to 0


def trained_on_video(model_file) -> bool:
    """SmolVLM2 releases' chat templates (kept in the GGUF) place video items; SmolVLM (v1) templates do not."""
    template = str(model_file.metadata.get("tokenizer.chat_template") or "")
    return "'video'" in template or '"video"' in template


def video_sampling(mmproj, fps: float | None, max_frames: int | None) -> VideoSampling:
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise BadInput(f"{{fps}} must be a finite number of frames a second above 0, not {fps}")
    if max_frames is not None and max_frames < 1:
        raise BadInput(f"{{max_frames}} must be at least 1, not {max_frames}")
    size = tile_size_of(mmproj)
    meta = mmproj.metadata
    # the checkpoint's own sampling (convert wrote it), else the releases'; transformers' video processor resizes
    # to the preprocessor's `size` first (it overrides video_size): the image edge, where convert wrote no size
    return VideoSampling(
        fps or float(meta.get(VIDEO_FPS_KEY) or RELEASE_FPS),
        max_frames or int(meta.get(VIDEO_MAX_FRAMES_KEY) or RELEASE_MAX_FRAMES),
        int(meta.get(VIDEO_SIZE_KEY) or size.default_edge),
        size.tile,
    )


def clip_sampling(model, fps: float | None, max_frames: int | None) -> VideoSampling:
    """The model's sampling rule for a clip; a model without an mmproj cannot take one."""
    if model.files.mmproj is None:
        raise ModelFileError(
            f"{model.files.model.path}: no mmproj-*.gguf beside it; a video needs one: pass {{mmproj}}"
        )
    return video_sampling(model.files.mmproj, fps, max_frames)


def progress_after_seconds() -> float:
    """How long frames go by before progress lines start: SMOLCLI_PROGRESS_AFTER_S, else a second."""
    value = os.environ.get(PROGRESS_AFTER_VARIABLE, "")
    try:
        return max(0.0, float(value)) if value.strip() else PROGRESS_AFTER_S
    except ValueError:
        return PROGRESS_AFTER_S


def frame_progress(report, label: str) -> FrameProgress:
    return FrameProgress(report, label, after_seconds=progress_after_seconds())


@dataclass
class ClipFrames:
    """A clip's sampled frames, decoded and resized, with what its plan said."""

    plan: VideoPlan
    frames: list[VideoFrame]
    memory_plan: MemoryPlan | None = None  # with max_memory: the plan the frames were admitted under
    memory_report: dict | None = None  # that plan as Answer.memory_plan reports it

    @property
    def timestamps(self) -> list[float]:
        return [frame.timestamp for frame in self.frames]

    @property
    def images(self) -> list[RGBImage]:
        return [frame.image for frame in self.frames]

    def text(self) -> str:
        """The clip's part of the user turn, one FRAME_SLOT per frame."""
        return video_text(self.timestamps, self.plan.duration)

    def summary(self) -> dict:
        """What `ask --json` reports as "video"."""
        return {
            "duration_s": round(self.plan.duration, 3),
            "fps": round(self.plan.fps, 3),
            "total_frames": self.plan.total_frames,
            "frames_used": len(self.frames),
            "timestamps_s": [round(t, 3) for t in self.timestamps],
        }


@dataclass
class FrameRoom:
    """Where the frames must fit: `room` tokens of an n_ctx-token context, max_tokens kept for the answer;
    with a memory budget, n_ctx_for(tokens) is the context a prompt of that many tokens gets."""

    room: int
    n_ctx: int
    max_tokens: int
    budget: object = None
    n_ctx_for: Callable[[int], int] | None = None
    extra_tokens: int = 0  # images beside the clip: their exact tokens, for the memory plan's context


def read_clip(
    engine, vision: FrameVision, video, sampling: VideoSampling, text_for, room: FrameRoom, report
) -> ClipFrames:
    """Plan the clip, refuse it before decoding when its frames do not fit (saying how many would), decode them."""
    with open_clip(video) as clip:
        plan = clip.plan(sampling)
        frame_tokens = frame_tokens_each(engine, vision)
        check_frames_fit_context(engine, text_for, plan, frame_tokens, room.room, room.max_tokens, room.n_ctx)
        memory_plan = None
        if room.budget is not None:

            def n_ctx_for(n_frames: int) -> int:
                tokens = planned_tokens(engine, text_for, plan, n_frames, frame_tokens) + room.extra_tokens
                return room.n_ctx_for(tokens)

            memory_plan = check_frames_fit_memory(room.budget, plan, n_ctx_for)
        frames = clip.frames(plan, sampling, frame_progress(report, "decoding frame"))
    return ClipFrames(plan, frames, memory_plan, room.budget.report(memory_plan) if memory_plan else None)


def ask_video(model, prompt: str, video, pictures, settings, logprobs, stream, system, fps, max_frames, report):
    """Model.ask's path when a video is given; `pictures` are the question's images, already read."""
    sampling_rule = clip_sampling(model, fps, max_frames)
    warn_if_not_trained_on_video(model, report)
    constraint = settings.constraint()  # refused before anything runs
    content = place_video(place_images(prompt, len(pictures)))
    vision_images = model.vision_for(pictures) if pictures else None
    budget = model.memory_budget(vision_images or model.files.mmproj, pictures)
    started = time.perf_counter()
    was_loaded = model.loaded
    engine = model._hold(model)
    if vision_images is not None:
        engine.use_mmproj(vision_images)
    frames_vision = frame_vision(model, engine)
    load_seconds = (time.perf_counter() - started) if was_loaded else engine.load_seconds
    before = engine.counters.snapshot()
    limit = model.options.ctx or engine.n_ctx_train

    def text_for(stamps: list[float], duration: float) -> str:
        return first_turn(content, system).replace(VIDEO_MARKER, video_text(stamps, duration), 1)

    room = FrameRoom(
        limit,
        limit,
        settings.max_tokens,
        budget,
        lambda tokens: model.options.ctx or ask_context_size(tokens, settings.max_tokens, engine.n_ctx_train),
        budget.image_tokens if budget else 0,
    )
    clip = read_clip(engine, frames_vision, video, sampling_rule, text_for, room, report)
    text = first_turn(content, system).replace(VIDEO_MARKER, clip.text(), 1)
    tokenized = tokenize_video_prompt(engine, frames_vision, text, pictures, clip.images)
    try:
        n_ctx = model.options.ctx or ask_context_size(tokenized.n_tokens, settings.max_tokens, engine.n_ctx_train)
        cache_type = clip.memory_plan.cache_type if clip.memory_plan else (model.options.cache_type or "f16")
        model._fresh_context(engine, n_ctx, cache_type)
        engine.check_fits(tokenized.n_tokens + 1)  # images beside the clip were not in the plan
        evaluate_video_prompt(engine, frames_vision, tokenized, frame_progress(report, "encoding frame"))
    finally:
        tokenized.free()
    from smolcli.api.model import answer_after_prompt

    def with_the_clip(answer: Answer) -> Answer:
        return dataclasses.replace(answer, video=clip.summary(), mmproj=str(model.files.mmproj.path))

    return answer_after_prompt(
        engine,
        settings,
        constraint,
        tokenized,
        before,
        load_seconds,
        True,
        clip.memory_report,
        logprobs,
        stream,
        with_the_clip,
    )


def warn_if_not_trained_on_video(model, report) -> None:
    """Once per model: a SmolVLM (v1) release was not trained on video."""
    if not trained_on_video(model.files.model) and not getattr(model, "_warned_v1_video", False):
        model._warned_v1_video = True
        report(
            f"note: {model.files.model.path.name} is a SmolVLM (v1) model, not trained on video; "
            "its answers about clips may be poor (SmolVLM2 releases were trained on video)"
        )


def frame_vision(model, engine) -> FrameVision:
    """One frame context per model, freed with it."""
    vision = getattr(model, "_frame_vision", None)
    if vision is None or vision.closed:
        vision = FrameVision(engine, model.files.mmproj)
        model._frame_vision = vision
    return vision
