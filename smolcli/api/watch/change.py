"""How much a frame differs from the last one asked about: the share of a small grey thumbnail that changed.

A thumbnail makes the measure cheap (every frame is compared while the model is idle) and blind to sensor
noise and compression artefacts, which move single pixels by a few levels, while a person walking in
changes whole regions.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THUMBNAIL = (32, 32)
# a thumbnail pixel counts as changed when its brightness moved by more than a tenth of the range
CHANGED_LEVELS = 25


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> int16 [32, 32] grey, each pixel the average of its area."""
    grey = Image.fromarray(pixels).convert("L").resize(THUMBNAIL, Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.int16)


def changed_fraction(before: np.ndarray, after: np.ndarray) -> float:
    """0.0 (the same picture) to 1.0 (every part of it changed), from two thumbnails."""
    return float(np.mean(np.abs(after - before) > CHANGED_LEVELS))
