"""What the engine asks of a vision encoder, typed: the one built into llama.cpp (mtmd, runtime/llama/mtmd_vision.py)
and ONNX Runtime's (runtime/vision/onnx_vision.py) are its two implementations.

Every encoder names itself (Answer.vision_engine), tags the embedding cache's keys, and says which engine takes
an mmproj. One that runs outside llama.cpp (a LayoutEncoder) also lays images out itself (our own tile grid, not
mtmd's tokenizer) and gives each tile's or video frame's rows for the engine to decode.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from smolcli.runtime.gguf.gguf_file import GGUFSummary
from smolcli.runtime.vision.image_tiles import TileGrid
from smolcli.runtime.vision.images import RGBImage


@runtime_checkable
class VisionEncoder(Protocol):
    @property
    def name(self) -> str:
        """What Answer.vision_engine reports: "mtmd", "onnx-int8", ..."""
        ...

    @property
    def cache_tag(self) -> str | None:
        """Told apart in the embedding cache's keys (None: the mmproj's own numbers, mtmd's)."""
        ...

    def engine_for(self, mmproj: GGUFSummary) -> str:
        """Which encoder takes this mmproj: this one's name, or "mtmd" when it refuses it."""
        ...


@runtime_checkable
class LayoutEncoder(VisionEncoder, Protocol):
    """An encoder outside llama.cpp: the prompt's image layout is ours, and the rows are decoded as embeddings."""

    def remember(self, digest: str, image: RGBImage) -> None:
        """Keep the image under its digest until its tiles are encoded."""
        ...

    def tile_grid(self, mmproj: GGUFSummary, image: RGBImage) -> TileGrid: ...

    def tile_embeddings(self, mmproj: GGUFSummary, digest: str, tile: int) -> np.ndarray | None:
        """A remembered image's tile as float32 [n_tokens, n_embd] rows."""
        ...

    def frame_embeddings(self, mmproj: GGUFSummary, frame: RGBImage) -> np.ndarray | None:
        """A video frame (one tile's square, untiled) as float32 [n_tokens, n_embd] rows."""
        ...
