"""How many of a clip's planned frames a run can take: the context's room and, with max_memory, the memory limit.

Both are known before any frame is decoded: the prompt's text tokenizes from the plan's timestamps,
every frame takes the same image tokens, and the memory plan counts the frames' buffers. A clip
that does not fit is refused with the number of frames that would ({max_frames=N}).
"""

from __future__ import annotations

from typing import Callable

from smolcli.errors import ContextFull, MemoryPlanRefused
from smolcli.models.smolvlm_video import FRAME_SLOT
from smolcli.runtime.planning.memory_plan import MemoryPlan
from smolcli.runtime.video.clip import VideoPlan
from smolcli.util.units import size_text

TextFor = Callable[[list[float], float], str]  # the prompt text, one FRAME_SLOT per frame: timestamps, duration


def most_frames(n_frames: int, fits: Callable[[int], bool]) -> int:
    """The most frames (0..n_frames) for which `fits` holds; fits(n) must hold for every smaller n."""
    low, high = 0, n_frames + 1  # low fits (or is 0), high does not
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def planned_tokens(engine, text_for: TextFor, plan: VideoPlan, n_frames: int, frame_tokens: int) -> int:
    """The prompt's tokens with the plan's first n_frames frames: its text tokenized, each frame's image tokens."""
    stamps = [index / plan.fps for index in plan.indices[:n_frames]]
    pieces = text_for(stamps, plan.duration).split(FRAME_SLOT)
    return sum(engine.text_tokens(piece.encode(), False)[0] for piece in pieces) + n_frames * frame_tokens


def fix_for(fits: int, otherwise: str) -> str:
    return f"use {{max_frames={fits}}} or a lower {{fps}}" if fits else otherwise


def check_frames_fit_context(
    engine, text_for: TextFor, plan: VideoPlan, frame_tokens: int, room: int, max_tokens: int, n_ctx: int
) -> int:
    """The prompt's tokens with every planned frame, when they and max_tokens fit in `room`; else ContextFull."""
    needed = planned_tokens(engine, text_for, plan, plan.n_frames, frame_tokens)
    if needed + max_tokens <= room:
        return needed
    fits = most_frames(
        plan.n_frames, lambda n: planned_tokens(engine, text_for, plan, n, frame_tokens) + max_tokens <= room
    )
    where = (
        f"the {n_ctx}-token context holds"
        if room == n_ctx
        else f"the {room} tokens left of the {n_ctx}-token context hold"
    )
    raise ContextFull(
        f"the clip's {plan.n_frames} frames need {needed} tokens, more than {where} "
        f"with {max_tokens} to answer; {fix_for(fits, 'raise {ctx} or shorten the prompt')}",
        n_past=n_ctx - room,
        n_new=needed,
        n_ctx=n_ctx,
    )


def check_frames_fit_memory(budget, plan: VideoPlan, n_ctx_for: Callable[[int], int]) -> MemoryPlan:
    """With max_memory: the plan with every frame (n_ctx_for(n): the context n frames need), or a refusal
    naming how many frames would fit."""
    attempt = budget.plan_frames(n_ctx_for(plan.n_frames), plan.n_frames)
    if attempt.fits:
        return attempt.plan
    fits = most_frames(plan.n_frames, lambda n: budget.plan_frames(n_ctx_for(n), n).fits)
    if not fits:
        budget.plan(n_ctx_for(0))  # nothing fits with no frame at all: the usual refusal, part by part
    frames = attempt.plan.part("images").total
    raise MemoryPlanRefused(
        f"the clip's {plan.n_frames} frames need about {size_text(attempt.plan.total)} with the model "
        f"({size_text(frames)} for images and frames, a {attempt.plan.n_ctx}-token {attempt.plan.cache_type} KV cache) "
        f"but {{max_memory}} {budget.limit.text} allows {size_text(budget.limit.size)}; {fix_for(fits, 'raise {max_memory}')}",
        plan=attempt.plan,
        limit=budget.limit.size,
    )
