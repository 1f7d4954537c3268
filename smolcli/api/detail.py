"""Image detail: the mmproj that tiles images at the size image_size or max_tiles asks for."""

from __future__ import annotations

from smolcli.runtime.gguf.gguf_file import GGUFSummary
from smolcli.runtime.vision.image_tiles import edge_for_image_size, edge_for_max_tiles, tile_size_of
from smolcli.runtime.vision.images import RGBImage
from smolcli.runtime.vision.mmproj_variant import with_longest_edge


def mmproj_for_detail(
    mmproj: GGUFSummary, images: list[RGBImage], image_size: int | None, max_tiles: int | None
) -> GGUFSummary:
    """The model's own mmproj, or a cached copy that differs only in its resize edge (mtmd reads it from the file)."""
    if image_size is None and max_tiles is None:
        return mmproj
    size = tile_size_of(mmproj)
    if image_size is not None:
        edge = edge_for_image_size(image_size, size)
    else:
        edge = edge_for_max_tiles([(image.width, image.height) for image in images], max_tiles, size)
    return with_longest_edge(mmproj, edge)
