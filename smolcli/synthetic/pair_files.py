"""Where a random checkpoint, its converted pair and the picture asked about lie: the demo's and the bench's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PairFiles:
    folder: Path  # the converted pair's folder
    checkpoint: Path  # the random checkpoint, in Hugging Face layout
    model: Path
    mmproj: Path
    image: Path
