"""mtmd's encoder on our own tiles: the LayoutEncoder of the mtmd path (the GPU's, and --vision-engine mtmd).

Given a whole image, mtmd resizes it with its own resampler before cutting tiles: about 1e-2 off transformers'
logits on an image upscaled before tiling. Here the image is cut by our own preprocessing (image_preprocess:
transformers' Pillow resizes, its grid, its prompt order through own_layout) and each tile and the global view
goes to mtmd as one tile-size bitmap, through a context opened from the mmproj copy whose longest edge is one
tile (mmproj_variant): mtmd then resamples nothing, as with video frames. mtmd still runs the encoder itself,
on the GPU where the engine put it; only the pixels it is handed are ours.

An image's tiles are cut on its first tile asked for and held (the last KEPT_IMAGES images); each tile is
encoded when the engine asks for it, so one tile's activations at a time, as mtmd does. Every image of the
prompt being laid out is held until its tiles are asked for, however many the prompt has (mtmd took any number
of whole images); the earlier prompts' beyond KEPT_IMAGES are let go when the next prompt is laid out.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from smolcli.runtime.gguf.gguf_file import GGUFSummary
from smolcli.runtime.llama.mtmd_vision import MtmdVision
from smolcli.runtime.vision.image_preprocess import tile_images
from smolcli.runtime.vision.image_tiles import PREPROC_KEY, TILE_KEY, TileGrid, tile_grid
from smolcli.runtime.vision.images import RGBImage
from smolcli.runtime.vision.onnx_vision import KEPT_IMAGES, keep_recent
from smolcli.runtime.vision.prompt_images import PromptImages

FORMAT = "v1"  # bump when the tiles handed to mtmd change: cached embeddings are then made again


class MtmdTiles:
    """mtmd's encoder (through `mtmd_ctx`, a tile-edge context over the engine's model) on our own layout."""

    name = "mtmd"  # what Answer.vision_engine reports: mtmd's encoder, whichever pixels it is given
    # told apart from the embeddings mtmd made of whole images (tagged None) in the embedding cache
    cache_tag = f"mtmd-tiles-{FORMAT}"

    def __init__(self, mtmd: MtmdVision, mtmd_ctx):
        self._mtmd, self._ctx = mtmd, mtmd_ctx
        self.images = PromptImages(KEPT_IMAGES)
        self._tiles: OrderedDict = OrderedDict()  # digest -> the image's tiles and global view, as RGBImages

    def engine_for(self, mmproj: GGUFSummary) -> str:
        return self.name

    def remember(self, digest: str, image: RGBImage) -> None:
        self.images.remember(digest, image)

    def tile_grid(self, mmproj: GGUFSummary, image: RGBImage) -> TileGrid:
        return tile_grid(image.width, image.height, int(mmproj.metadata[PREPROC_KEY]), int(mmproj.metadata[TILE_KEY]))

    def tile_embeddings(self, mmproj: GGUFSummary, digest: str, tile: int) -> np.ndarray:
        self.images.asked()
        if digest not in self._tiles:
            image = self.images.get(digest, "mtmd's tile encoder")
            meta = mmproj.metadata
            pieces = tile_images(image, int(meta[PREPROC_KEY]), int(meta[TILE_KEY]))
            keep_recent(self._tiles, digest, [_rgb(piece) for piece in pieces])
        tiles = self._tiles[digest]
        # the engine counts tiles per image over the whole prompt: the same image twice continues the count
        return self._mtmd.encode_square(self._ctx, tiles[tile % len(tiles)])

    def frame_embeddings(self, mmproj: GGUFSummary, frame: RGBImage) -> np.ndarray:
        """A video frame already cut to one tile's square: encoded as it is."""
        return self._mtmd.encode_square(self._ctx, frame)

    def forget(self) -> None:
        self.images.clear()
        self._tiles.clear()


def _rgb(piece) -> RGBImage:
    return RGBImage("tile", piece.width, piece.height, piece.tobytes())
