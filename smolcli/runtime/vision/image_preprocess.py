"""SmolVLM's image preprocessing, equal to transformers' Idefics3ImageProcessor(Pil), for the ONNX vision path.

The same steps in the same order, each a Pillow resize of uint8 pixels with the release's filter
(LANCZOS, `resample: 1` in every SmolVLM preprocessor_config.json):
1. longest side to `longest_edge` (the other side keeps the aspect ratio, rounded down then up to even),
   then below transformers' MAX_IMAGE_SIZE;
2. each side up to whole tiles (ceil to a multiple of `tile`, the short side from the aspect ratio first);
3. tiles cut row by row, then the global view: the step-2 image resized to one tile;
4. rescale by 1/255 and normalize with the mmproj's mean and std.
The tiles come out in the order the prompt lists them (<row_1_col_1> ... then <global-img>).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from smolcli.runtime.vision.image_tiles import longest_edge_size, tile_grid, whole_tiles_size
from smolcli.runtime.vision.images import RGBImage

RESAMPLE = Image.Resampling.LANCZOS


def tile_images(image: RGBImage, longest_edge: int, tile: int) -> list[Image.Image]:
    """The tiles (row by row) and then the global view, as Pillow images; one image alone when it fits a tile."""
    pil = Image.frombytes("RGB", (image.width, image.height), image.pixels)
    pil = pil.resize(longest_edge_size(pil.width, pil.height, longest_edge), RESAMPLE)
    pil = pil.resize(whole_tiles_size(pil.width, pil.height, tile), RESAMPLE)
    grid = tile_grid(image.width, image.height, longest_edge, tile)
    if not grid.tiles:
        return [pil]
    tiles = [
        pil.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile))
        for r in range(grid.rows)
        for c in range(grid.columns)
    ]
    return tiles + [pil.resize((tile, tile), RESAMPLE)]


def tile_pixels(piece: Image.Image, mean: list[float], std: list[float]) -> np.ndarray:
    """float32 [3, tile, tile] of one tile: rescaled in float64 as transformers does, then normalized."""
    scaled = (np.asarray(piece, dtype=np.uint8).astype(np.float64) * (1 / 255)).astype(np.float32)
    normalized = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1))


def pixel_values(image: RGBImage, longest_edge: int, tile: int, mean: list[float], std: list[float]) -> np.ndarray:
    """float32 [tiles, 3, tile, tile], rescaled and normalized, in prompt order."""
    return np.stack([tile_pixels(piece, mean, std) for piece in tile_images(image, longest_edge, tile)])
