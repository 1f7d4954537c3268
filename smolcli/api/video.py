"""Model.ask with a video clip: frames planned, decoded, laid out as SmolVLM2 was trained, and answered.

The clip's frames come from the release's sampling rule (1 frame a second, at most 64, each
resized to the mmproj's longest edge and then one tile's square, as transformers does); `fps` and
`max_frames` override it. The context is sized for the frames before any is decoded, so a clip
that cannot fit is refused at once with the number of frames that would.
"""

from __future__ import annotations

import dataclasses
import time

from smolcli.api.answer import Answer, AnswerStream, answer_from, counters_since, usage_and_timings
from smolcli.errors import BadInput, ContextFull, ModelFileError
from smolcli.models.smolvlm_video import FRAME_SLOT, VIDEO_MARKER, place_video, video_text
from smolcli.runtime.context_size import ask_context_size
from smolcli.runtime.generation import Generation, generate_pieces
from smolcli.runtime.image_tiles import tile_size_of
from smolcli.runtime.prompting import first_turn, place_images
from smolcli.runtime.sampling import Sampler
from smolcli.runtime.video import FrameProgress, VideoSampling, open_clip
from smolcli.runtime.video_prompt import (
    FrameVision,
    evaluate_video_prompt,
    frame_tokens_each,
    tokenize_video_prompt,
)

RELEASE_FPS = 1.0  # every SmolVLM2 release's preprocessor_config.json video_sampling
RELEASE_MAX_FRAMES = 64


def trained_on_video(model_file) -> bool:
    """SmolVLM2 releases' chat templates (kept in the GGUF) place video items; SmolVLM (v1) templates do not."""
    template = str(model_file.metadata.get("tokenizer.chat_template") or "")
    return "'video'" in template or '"video"' in template


def video_sampling(mmproj, fps: float | None, max_frames: int | None) -> VideoSampling:
    if fps is not None and not fps > 0:
        raise BadInput(f"{{fps}} must be more than 0 frames a second, not {fps}")
    if max_frames is not None and max_frames < 1:
        raise BadInput(f"{{max_frames}} must be at least 1, not {max_frames}")
    size = tile_size_of(mmproj)
    # transformers' video processor resizes to the preprocessor's `size` first (it overrides video_size)
    return VideoSampling(fps or RELEASE_FPS, max_frames or RELEASE_MAX_FRAMES, size.default_edge, size.tile)


def ask_video(model, prompt: str, video, pictures, settings, logprobs, stream, system, fps, max_frames, report):
    """Model.ask's path when a video is given; `pictures` are the question's images, already read."""
    if model.files.mmproj is None:
        raise ModelFileError(
            f"{model.files.model.path}: no mmproj-*.gguf beside it; a video needs one: pass {{mmproj}}"
        )
    if not trained_on_video(model.files.model) and not getattr(model, "_warned_v1_video", False):
        model._warned_v1_video = True
        report(
            f"note: {model.files.model.path.name} is a SmolVLM (v1) model, not trained on video; "
            "its answers about clips may be poor (SmolVLM2 releases were trained on video)"
        )
    limits, sampling, constraint = settings.limits(), settings.sampling(), settings.constraint()
    sampling_rule = video_sampling(model.files.mmproj, fps, max_frames)
    content = place_video(place_images(prompt, len(pictures)))
    vision_images = model.vision_for(pictures) if pictures else None
    started = time.perf_counter()
    was_loaded = model.loaded
    engine = model._hold(model)
    if vision_images is not None:
        engine.use_mmproj(vision_images)
    frames_vision = _frame_vision(model, engine)
    load_seconds = (time.perf_counter() - started) if was_loaded else engine.load_seconds
    before = engine.counters.snapshot()
    with open_clip(video) as clip:
        plan = clip.plan(sampling_rule)
        frame_tokens = frame_tokens_each(engine, frames_vision)
        _check_frames_fit(model, engine, content, system, plan, frame_tokens, settings.max_tokens)
        progress = FrameProgress(report, "decoding frame")
        frames = clip.frames(plan, sampling_rule, progress)
    timestamps = [frame.timestamp for frame in frames]
    text = first_turn(content, system).replace(VIDEO_MARKER, video_text(timestamps, plan.duration), 1)
    tokenized = tokenize_video_prompt(engine, frames_vision, text, pictures, [f.image for f in frames])
    try:
        n_ctx = model.options.ctx or ask_context_size(tokenized.n_tokens, settings.max_tokens, engine.n_ctx_train)
        model._fresh_context(engine, n_ctx, model.options.cache_type or "f16")
        engine.check_fits(tokenized.n_tokens + 1)  # images beside the clip were not in the plan
        evaluate_video_prompt(engine, frames_vision, tokenized, FrameProgress(report, "encoding frame"))
    finally:
        tokenized.free()
    sampler = Sampler(sampling, constraint.gbnf if constraint else None, engine.vocab)
    summary = {
        "duration_s": round(plan.duration, 3),
        "fps": round(plan.fps, 3),
        "total_frames": plan.total_frames,
        "frames_used": len(frames),
        "timestamps_s": [round(t, 3) for t in timestamps],
    }

    def finish(generation: Generation) -> Answer:
        sampler.close()
        done = counters_since(before, engine.counters)
        usage, timings = usage_and_timings(
            done, tokenized.n_tokens, tokenized.n_image_tokens, len(generation.tokens), load_seconds
        )
        answer = answer_from(generation, engine, usage, timings, True, None, constraint, settings.max_tokens)
        return dataclasses.replace(answer, video=summary, mmproj=str(model.files.mmproj.path))

    answer = AnswerStream(generate_pieces(engine, sampler, limits, logprobs, None), finish)
    return answer if stream else answer.read()


def _frame_vision(model, engine) -> FrameVision:
    """One frame context per model, freed with it."""
    vision = getattr(model, "_frame_vision", None)
    if vision is None or vision.ctx is None:
        vision = FrameVision(engine, model.files.mmproj)
        model._frame_vision = vision
    return vision


def _planned_tokens(engine, content: str, system, plan, n_frames: int, frame_tokens: int) -> int:
    """The prompt's tokens with the plan's first n_frames frames: its text tokenized, each frame's image tokens."""
    stamps = [index / plan.fps for index in plan.indices[:n_frames]]
    text = first_turn(content, system).replace(VIDEO_MARKER, video_text(stamps, plan.duration), 1)
    return (
        sum(engine._text_tokens(piece.encode(), False)[0] for piece in text.split(FRAME_SLOT)) + n_frames * frame_tokens
    )


def _check_frames_fit(model, engine, content, system, plan, frame_tokens: int, max_tokens: int) -> None:
    """Before decoding: the frames' tokens and room to answer within the context; if not, how many frames would fit."""
    limit = model.options.ctx or engine.n_ctx_train
    needed = _planned_tokens(engine, content, system, plan, plan.n_frames, frame_tokens)
    if needed + max_tokens <= limit:
        return
    low, high = 0, plan.n_frames  # the most frames that fit: low fits (or is 0), high does not
    while high - low > 1:
        middle = (low + high) // 2
        if _planned_tokens(engine, content, system, plan, middle, frame_tokens) + max_tokens <= limit:
            low = middle
        else:
            high = middle
    fix = f"use {{max_frames={low}}} or a lower {{fps}}" if low else "raise {ctx} or shorten the prompt"
    raise ContextFull(
        f"the clip's {plan.n_frames} frames need {needed} tokens, more than the {limit}-token context holds "
        f"with {max_tokens} to answer; {fix}",
        n_past=0,
        n_new=needed,
        n_ctx=limit,
    )
