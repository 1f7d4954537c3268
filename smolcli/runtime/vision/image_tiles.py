"""How many tiles SmolVLM cuts an image into, and which longest edge keeps an image within a tile budget.

The arithmetic is transformers' Idefics3ImageProcessor (mtmd's idefics3 preprocessor cuts the same grid at
two tiles or more along the longest side): resize so that the longest side is `longest_edge` pixels (at most
MAX_IMAGE_SIZE), then round each side up to whole tiles. Every image also gets one global view (the whole
image at one tile's size). The one TileGrid the memory plan counts and the ONNX path cuts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gguf

from smolcli.errors import SmolcliError
from smolcli.runtime.gguf.gguf_file import GGUFSummary

if TYPE_CHECKING:
    from smolcli.runtime.vision.images import RGBImage

TILE_KEY = gguf.Keys.ClipVision.IMAGE_SIZE  # pixels per tile side
PREPROC_KEY = gguf.Keys.ClipVision.PREPROC_IMAGE_SIZE  # the longest side before cutting

# With one tile along the longest side mtmd would still add a row/column grid, where SmolVLM's own
# processor sends the global view alone; two tiles is the least both cut the same way.
FEWEST_TILES_ALONG_LONGEST_SIDE = 2


@dataclass(frozen=True)
class TileSize:
    tile: int  # pixels per tile side (the mmproj's clip.vision.image_size)
    default_edge: int  # the model's longest edge (clip.vision.preproc_image_size)

    @property
    def smallest_edge(self) -> int:
        return FEWEST_TILES_ALONG_LONGEST_SIDE * self.tile


def tile_size_of(mmproj: GGUFSummary) -> TileSize:
    tile = mmproj.metadata.get(TILE_KEY)
    edge = mmproj.metadata.get(PREPROC_KEY)
    if not tile or not edge:
        raise SmolcliError(
            f"{mmproj.path}: lacks {TILE_KEY} or {PREPROC_KEY}, so its tiling cannot be "
            "changed; convert the checkpoint again with `smolcli convert`"
        )
    return TileSize(int(tile), int(edge))


MAX_IMAGE_SIZE = 4096  # transformers.models.idefics3: the largest side it resizes an image to


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


def longest_edge_size(width: int, height: int, longest_edge: int) -> tuple[int, int]:
    """An image's size after the first resize: to longest_edge, then below MAX_IMAGE_SIZE (videos clamp the edge
    before resizing instead: runtime.video.clip)."""
    width, height = even_longest_edge_size(width, height, longest_edge)
    aspect = width / height
    if width >= height and width > MAX_IMAGE_SIZE:
        width, height = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)
    elif height > width and height > MAX_IMAGE_SIZE:
        height, width = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE * aspect)
    return max(width, 1), max(height, 1)


def whole_tiles_size(width: int, height: int, tile: int) -> tuple[int, int]:
    """The second resize: each side up to whole tiles, the short side from the aspect ratio first."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return width, height


@dataclass(frozen=True)
class TileGrid:
    """How one image is cut: rows x columns of tiles (row by row in the prompt), then the global view.
    0 x 0 when the resized image fits one tile: the global view alone, as transformers sends it."""

    rows: int
    columns: int

    @property
    def tiles(self) -> int:
        return self.rows * self.columns

    @property
    def encodes(self) -> int:
        """Runs of the vision encoder for this image: every tile and the global view."""
        return self.tiles + 1


def tile_grid(width: int, height: int, longest_edge: int, tile: int) -> TileGrid:
    """The grid transformers' Idefics3 processor cuts an image of this size into, worked out without resizing."""
    width, height = whole_tiles_size(*longest_edge_size(width, height, longest_edge), tile)
    if width <= tile and height <= tile:
        return TileGrid(0, 0)
    return TileGrid(height // tile, width // tile)


# --image-size beyond this many times the model's own edge: thousands of tiles, more tokens than any context
# holds, and mtmd refuses it ("could not tokenize") after minutes of resizing
LARGEST_EDGE_FACTOR = 4


def edge_for_image_size(pixels: int, size: TileSize) -> int:
    """--image-size PX: rounded up to whole tiles, at least two of them, at most LARGEST_EDGE_FACTOR x the model's."""
    largest = LARGEST_EDGE_FACTOR * size.default_edge
    if pixels > largest:
        raise SmolcliError(
            f"{{image_size={pixels}}} is too large: this model's own is {size.default_edge} px and "
            f"{largest} px is the most smolcli tiles to ({(largest // size.tile) ** 2} tiles for a square image); "
            f"use {{image_size={largest}}} or less"
        )
    if pixels < size.smallest_edge:
        raise SmolcliError(
            f"{{image_size={pixels}}} is too small: this model's tiles are {size.tile} px and it needs at least "
            f"{FEWEST_TILES_ALONG_LONGEST_SIDE} along the longest side; use {{image_size={size.smallest_edge}}} or more"
        )
    return -(-pixels // size.tile) * size.tile


def edge_for_max_tiles(image_sizes: list[tuple[int, int]], max_tiles: int, size: TileSize) -> int:
    """--max-tiles N: the largest longest edge, up to the model's own, that cuts every image into at most N tiles."""
    if max_tiles < 1:
        raise SmolcliError(f"{{max_tiles}} must be at least 1, not {max_tiles}")
    largest = max(size.default_edge // size.tile, FEWEST_TILES_ALONG_LONGEST_SIDE)
    for along in range(largest, FEWEST_TILES_ALONG_LONGEST_SIDE - 1, -1):
        edge = along * size.tile
        if all(tile_grid(w, h, edge, size.tile).tiles <= max_tiles for w, h in image_sizes):
            return edge
    fewest = max(tile_grid(w, h, size.smallest_edge, size.tile).tiles for w, h in image_sizes)
    raise SmolcliError(
        f"{{max_tiles={max_tiles}}} is too few: at its smallest ({size.smallest_edge} px) this image needs {fewest} "
        f"tiles plus the global view; use {{max_tiles={fewest}}} or more"
    )


def fit_for_tiling(mmproj: GGUFSummary, image: "RGBImage") -> "RGBImage":
    """A very thin image stretched as transformers would (thin_side_target): mtmd refuses it, and the ONNX
    path cuts the same tiles from the same stretched picture."""
    from smolcli.runtime.vision.images import stretched

    size = tile_size_of(mmproj)
    target = thin_side_target(image.width, image.height, size.default_edge, size.tile)
    return stretched(image, target) if target else image


def thin_side_target(width: int, height: int, longest_edge: int, tile: int) -> tuple[int, int] | None:
    """The size to stretch a very thin image to before mtmd sees it, or None when it needs nothing.

    Resized so its longest side is `longest_edge`, a 1x8000 or 200x1 image has a short side of 0 px, which
    mtmd refuses. transformers' processor answers: it keeps that side at least 1 px, then rounds it up to one
    whole tile, i.e. it stretches the image to one tile across. Stretched here to the same shape, mtmd cuts
    the same tiles (and the same global view) that transformers does.
    """
    long_side, short_side = max(width, height), min(width, height)
    if short_side * longest_edge >= THIN_FRACTION * tile * long_side:
        return None
    # straight to the shape mtmd resizes to: the longest edge by one tile
    return (tile, longest_edge) if width < height else (longest_edge, tile)


# stretch only images whose short side would come out under this fraction of a tile: the rest go as they are
THIN_FRACTION = 1 / 8
