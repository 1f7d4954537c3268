"""Video frames resized as transformers resizes them: runtime.frame_resize against torchvision and the video processor.

transformers' SmolVLMVideoProcessor resizes uint8 frame tensors with torchvision's LANCZOS (antialiased),
which is PyTorch's own uint8 kernel, not Pillow's; ours must give the very same pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
from video_clips import frame_pixels
from video_reference import import_torchvision

from smolcli.runtime.video.clip import VideoSampling, resized_size, square_frame
from smolcli.runtime.video.frame_resize import resize_rgb

pytestmark = pytest.mark.reference

SIZES = [  # (height, width) -> (height, width): up, down, mixed, one side kept, thin, large factors
    ((48, 64), (72, 96)),
    ((120, 160), (72, 96)),
    ((72, 96), (48, 48)),
    ((60, 40), (96, 64)),
    ((1, 1), (9, 9)),
    ((5, 300), (5, 7)),
    ((400, 3), (4, 3)),
    ((37, 53), (53, 37)),
    ((720, 1280), (288, 512)),
    ((288, 512), (512, 512)),
    ((2000, 6), (5, 6)),  # a 400-fold downscale: the weights' precision at its 22-bit cap
]


def _torchvision_lanczos(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """What transformers' TorchvisionBackend.resize does to a uint8 frame."""
    import torch

    import_torchvision()
    from torchvision.transforms.v2 import functional as tvF

    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
    out = tvF.resize(tensor, [height, width], interpolation=tvF.InterpolationMode.LANCZOS, antialias=True)
    return out[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("source, target", SIZES)
def test_resize_equals_torchvision_lanczos(source, target):
    rng = np.random.default_rng(sum(source) + sum(target))
    noise = rng.integers(0, 256, (*source, 3), dtype=np.uint8)  # noise: every rounding decision shows
    ours = resize_rgb(noise, target[1], target[0])
    theirs = _torchvision_lanczos(noise, *target)
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


def test_pillow_lanczos_is_not_what_transformers_uses_for_frames():
    """Why frames do not go through Pillow (images do: transformers' image processor uses it)."""
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(noise).resize((96, 72), Image.Resampling.LANCZOS))
    assert np.abs(pillow.astype(int) - _torchvision_lanczos(noise, 72, 96)).max() >= 1


@pytest.mark.parametrize(
    "frame_size, sampling",
    [
        ((48, 64), VideoSampling(video_size=96, frame_size=48)),  # the tiny model's sizes: up, then down
        ((120, 160), VideoSampling(video_size=96, frame_size=48)),
        ((60, 40), VideoSampling(video_size=96, frame_size=48)),
        ((180, 320), VideoSampling(video_size=2048, frame_size=512)),  # SmolVLM2-256M/500M's: up to 2048 first
        ((240, 320), VideoSampling(video_size=1536, frame_size=384)),  # SmolVLM2-2.2B's
    ],
)
def test_frames_equal_transformers_video_processor(frame_size, sampling):
    """square_frame's pixels against SmolVLMVideoProcessor's pixel_values for the same frames."""
    import_torchvision()
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    height, width = frame_size
    frames = np.stack([frame_pixels(index * 7, width, height) for index in range(3)])
    processor = SmolVLMVideoProcessor(
        size={"longest_edge": sampling.video_size},
        max_image_size={"longest_edge": sampling.frame_size},
        video_sampling={"fps": 1, "max_frames": 64, "video_size": {"longest_edge": sampling.video_size}},
        resample=1,  # LANCZOS, as every SmolVLM2 preprocessor_config.json has it
    )
    theirs = processor(videos=[frames], do_sample_frames=False, return_tensors="np")["pixel_values"][0]
    ours = np.stack([square_frame(frame, sampling) for frame in frames])
    assert ours.shape == (3, sampling.frame_size, sampling.frame_size, 3)
    normalized = ((ours.astype(np.float32) / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2)
    assert theirs.shape == normalized.shape
    # their values are (x - 127.5) / 127.5 in float32, ours the same uint8 x rescaled then normalized
    assert np.abs(normalized - theirs).max() < 1e-6
    assert resized_size(width, height, sampling.video_size)[0] != width  # a first resize happened
