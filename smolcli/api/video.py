"""Model.ask with a video clip: frames planned, decoded, laid out as SmolVLM2 was trained, and answered.

The clip's frames come from the checkpoint's sampling rule, which `smolcli convert` writes into the mmproj
(else the releases': 1 frame a second, at most 64), each resized to the mmproj's longest edge and then one
tile's square, as transformers does; `fps` and `max_frames` override it. The context is sized for the frames before any is decoded, so a clip
that cannot fit is refused at once with the number of frames that would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from smolcli.api.loaded_pair import LoadedPair
from smolcli.api.video_plan import check_frames_fit_context, check_frames_fit_memory, planned_tokens
from smolcli.errors import BadInput, ModelFileError
from smolcli.models.smolvlm_video import VIDEO_FPS_KEY, VIDEO_MAX_FRAMES_KEY, VIDEO_SIZE_KEY, video_text
from smolcli.runtime.planning.memory_plan import MemoryPlan
from smolcli.runtime.video.clip import FrameProgress, VideoFrame, VideoPlan, VideoSampling, open_clip
from smolcli.runtime.video.video_prompt import (
    FrameVision,
    frame_tokens_each,
)
from smolcli.runtime.vision.image_tiles import tile_size_of
from smolcli.runtime.vision.images import RGBImage
from smolcli.util.slow_note import progress_after_seconds

RELEASE_FPS = 1.0  # every SmolVLM2 release's preprocessor_config.json video_sampling (when the mmproj has none)
RELEASE_MAX_FRAMES = 64
PROGRESS_AFTER_S = 1.0  # frames taking longer than this show "frame i of N" lines on stderr (SMOLCLI_PROGRESS_AFTER_S)


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


def clip_sampling(pair: LoadedPair, fps: float | None, max_frames: int | None) -> VideoSampling:
    """The model's sampling rule for a clip; a model without an mmproj cannot take one."""
    if pair.files.mmproj is None:
        raise ModelFileError(f"{pair.files.model.path}: no mmproj-*.gguf beside it; a video needs one: pass {{mmproj}}")
    return video_sampling(pair.files.mmproj, fps, max_frames)


def frame_progress(report, label: str) -> FrameProgress:
    return FrameProgress(report, label, after_seconds=progress_after_seconds(PROGRESS_AFTER_S))


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


@dataclass(frozen=True)
class ClipRequest:
    """A clip given with a question: the video (a path, '-' for stdin, or the file's bytes), its sampling
    overrides, and where its progress lines go."""

    video: object
    fps: float | None = None
    max_frames: int | None = None
    report: Callable[[str], None] = print


def warn_if_not_trained_on_video(pair: LoadedPair, report) -> None:
    """Once per model: a SmolVLM (v1) release was not trained on video."""
    if not trained_on_video(pair.files.model) and not pair.warned_v1_video:
        pair.warned_v1_video = True
        report(
            f"note: {pair.files.model.path.name} is a SmolVLM (v1) model, not trained on video; "
            "its answers about clips may be poor (SmolVLM2 releases were trained on video)"
        )
