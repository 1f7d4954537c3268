"""SmolVLM2's video prompt: the text transformers' SmolVLMProcessor writes around a clip's frames.

"You are provided the following series of {N in words} frames from a {H:MM:SS} [H:MM:SS] video.\n",
then per frame "\nFrame from {MM:SS}:" and one global image (no tiles), then "\n\n" before the
user's text. Each frame stands as FRAME_SLOT in the text: the runtime puts that frame's image
tokens there; the fake-token/global-img specials on either side are written out here, so the
text around each slot tokenizes exactly as transformers tokenizes the whole string.
"""

from __future__ import annotations

from datetime import timedelta

from smolcli.errors import BadInput
from smolcli.models.smolvlm_image_layout import FAKE_TOKEN, GLOBAL_IMAGE

VIDEO_MARKER = "<video>"  # where the clip stands in a user turn, as in transformers' chat template
# The checkpoint's video sampling, as `smolcli convert` writes it into the mmproj (absent: the releases' 1 fps, 64)
VIDEO_FPS_KEY = "smolcli.video.fps"
VIDEO_MAX_FRAMES_KEY = "smolcli.video.max_frames"
VIDEO_SIZE_KEY = "smolcli.video.size"  # the longest edge of a frame's first resize


def checkpoint_video_sampling(preprocessor: dict) -> dict[str, float | int] | None:
    """{fps, max_frames, size} as transformers' SmolVLMVideoProcessor reads them from the merged preprocessor
    config, or None without `video_sampling` (SmolVLM v1). Its `size`, when given, replaces video_size."""
    sampling = preprocessor.get("video_sampling")
    if not isinstance(sampling, dict):
        return None
    size = preprocessor.get("size") or sampling.get("video_size") or {}
    try:
        found = {"fps": float(sampling["fps"]), "max_frames": int(sampling["max_frames"])}
        found["size"] = int(size["longest_edge"]) if isinstance(size, dict) and "longest_edge" in size else None
    except (KeyError, TypeError, ValueError):
        raise BadInput(f"video_sampling {sampling!r} lacks a number for fps or max_frames") from None
    if not found["fps"] > 0 or found["max_frames"] < 1:
        raise BadInput(f"video_sampling {sampling!r}: fps must be above 0 and max_frames at least 1")
    return found


FRAME_SLOT = "\x00frame\x00"  # never in user text: one frame's image tokens go here

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()  # noqa: E501
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_in_words(n: int) -> str:
    """num2words(n) for 0 <= n < 1,000,000 (English): "sixty-four", "one hundred and twenty-eight"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_in_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        joiner = "" if rest == 0 else (" and " if rest < 100 else ", ")
        return number_in_words(n // 1000) + " thousand" + ("" if rest == 0 else joiner + number_in_words(rest))
    raise ValueError(f"{n} frames is more than a prompt can hold")


def frame_timestamp(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def video_text(timestamps: list[float], duration: float) -> str:
    """The clip's part of the user turn, one FRAME_SLOT per frame."""
    text = (
        f"You are provided the following series of {number_in_words(len(timestamps))} frames "
        f"from a {timedelta(seconds=int(duration))} [H:MM:SS] video.\n"
    )
    for seconds in timestamps:
        text += f"\nFrame from {frame_timestamp(seconds)}:{FAKE_TOKEN}{GLOBAL_IMAGE}{FRAME_SLOT}{FAKE_TOKEN}"
    return text + "\n\n"


def place_video(text: str) -> str:
    """The clip goes before the user's text (and its images), unless a `<video>` marker places it."""
    if text.count(VIDEO_MARKER) > 1:
        raise BadInput(f"the prompt has {text.count(VIDEO_MARKER)} {VIDEO_MARKER} markers; one clip per question")
    return text if VIDEO_MARKER in text else VIDEO_MARKER + text
