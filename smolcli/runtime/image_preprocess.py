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

import math

import numpy as np
from PIL import Image

from smolcli.runtime.images import RGBImage

RESAMPLE = Image.Resampling.LANCZOS
MAX_IMAGE_SIZE = 4096  # transformers.models.idefics3: the largest side it resizes to


def even_longest_edge_size(width: int, height: int, longest_edge: int) -> tuple[int, int]:
    """transformers' Idefics3 resize: the longest side to longest_edge, the other by the aspect, made even."""
    aspect = width / height
    if width >= height:
        width, height = longest_edge, int(longest_edge / aspect)
        height += height % 2
    else:
        height, width = longest_edge, int(longest_edge * aspect)
        width += width % 2
    return max(width, 1), max(height, 1)


def _longest_edge_size(width: int, height: int, longest_edge: int) -> tuple[int, int]:
    # images: resized first, then scaled below transformers' upper bound (videos clamp the edge first)
    width, height = even_longest_edge_size(width, height, longest_edge)
    aspect = width / height
    if width >= height and width > MAX_IMAGE_SIZE:
        width, height = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)
    elif height > width and height > MAX_IMAGE_SIZE:
        height, width = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE * aspect)
    return max(width, 1), max(height, 1)


def _whole_tiles_size(width: int, height: int, tile: int) -> tuple[int, int]:
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return width, height


def tile_grid(width: int, height: int, longest_edge: int, tile: int) -> tuple[int, int]:
    """(rows, columns) of tiles tile_images cuts, worked out without resizing; (0, 0): the global view alone."""
    width, height = _whole_tiles_size(*_longest_edge_size(width, height, longest_edge), tile)
    if width <= tile and height <= tile:
        return 0, 0
    return height // tile, width // tile


def tile_images(image: RGBImage, longest_edge: int, tile: int) -> list[Image.Image]:
    """The tiles (row by row) and then the global view, as Pillow images; one image alone when it fits a tile."""
    pil = Image.frombytes("RGB", (image.width, image.height), image.pixels)
    pil = pil.resize(_longest_edge_size(pil.width, pil.height, longest_edge), RESAMPLE)
    pil = pil.resize(_whole_tiles_size(pil.width, pil.height, tile), RESAMPLE)
    rows, columns = tile_grid(image.width, image.height, longest_edge, tile)
    if not rows:
        return [pil]
    tiles = [
        pil.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows) for c in range(columns)
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
