"""A clip in a conversation (Chat.send(video=...), Chat.replay of a turn that had one): its frames sampled and
decoded, checked against what is left of the conversation's context (and, with max_memory, the memory limit)
before any is decoded, and laid out as that turn's VideoTurn."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from smolcli.api.loaded_pair import LoadedPair
from smolcli.api.memory import MemoryBudget
from smolcli.api.video import (
    ClipFrames,
    ClipRequest,
    FrameRoom,
    clip_sampling,
    frame_progress,
    read_clip,
    warn_if_not_trained_on_video,
)
from smolcli.errors import SmolcliError
from smolcli.models.smolvlm_video import video_text
from smolcli.runtime.chat.session import ChatSession
from smolcli.runtime.llama.engine import Engine
from smolcli.runtime.planning.memory_plan import MemoryPlan
from smolcli.runtime.video.clip import open_clip
from smolcli.runtime.video.video_prompt import VideoTurn
from smolcli.runtime.vision.images import STDIN


def attach_clip(
    pair: LoadedPair,
    session: ChatSession,
    engine: Engine,
    text: str,
    request: ClipRequest,
    max_tokens: int,
    budget: Callable[[], MemoryBudget | None],
) -> ClipFrames:
    """The clip's frames for the session's next turn (its pending_video), refused before decoding when they cannot
    fit what is left of the context (or the memory budget, budget()'s), saying how many frames would. A refusal
    drops the turn's images and clip."""
    try:
        sampling = clip_sampling(pair, request.fps, request.max_frames)
        warn_if_not_trained_on_video(pair, request.report)
        n_images = len(session.pending_images)

        def text_for(stamps: list[float], duration: float) -> str:
            return session.render(text, n_images, video_text(stamps, duration))

        n_ctx = session.n_ctx or session.requested_ctx or engine.n_ctx_train  # a parked context's size too
        room = FrameRoom(n_ctx - session.n_past, n_ctx, max_tokens, budget(), lambda _tokens: n_ctx)
        clip = read_clip(engine, pair.frame_vision(), request.video, sampling, text_for, room, request.report)
    except SmolcliError as error:
        raise session.drop_images(error) from None
    session.pending_video = video_turn(pair, clip, request)
    return clip


def frames_budget(pair: LoadedPair, budget: MemoryBudget | None, plan: MemoryPlan | None) -> MemoryBudget | None:
    """With max_memory: the conversation's budget with the vision encoder in it (a chat that began without images
    planned none) and its KV-cache type, which its context already has."""
    if budget is None:
        return None
    if budget.vision is None:
        budget = pair.memory_budget(pair.files.mmproj, [])
    return dataclasses.replace(budget, requested_cache=plan.cache_type)


def replayed_clip(pair: LoadedPair, request: ClipRequest) -> VideoTurn:
    """A clip of an earlier turn (replay): sampled and decoded, no room check (the replay checks the whole)."""
    with open_clip(request.video) as opened:
        sampling = clip_sampling(pair, request.fps, request.max_frames)
        plan = opened.plan(sampling)
        clip = ClipFrames(plan, opened.frames(plan, sampling))
    return video_turn(pair, clip, request)


def video_turn(pair: LoadedPair, clip: ClipFrames, request: ClipRequest) -> VideoTurn:
    video = request.video
    source = video if isinstance(video, str) else (str(video) if isinstance(video, Path) else "video bytes")
    return VideoTurn(
        pair.frame_vision(),
        clip.images,
        clip.text(),
        "stdin" if source == STDIN else source,
        frame_progress(request.report, "encoding frame"),
    )
