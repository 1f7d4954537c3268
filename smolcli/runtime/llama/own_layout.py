"""A prompt laid out as transformers' processor does, without mtmd's tokenizer: text runs tokenized by llama.cpp's
vocabulary and each image's tiles (TileSlots) from the LayoutEncoder's grid (ONNX Runtime's, or MtmdTiles: mtmd's
encoder on our tiles), keyed by the image's content and the tile's index within it, as mtmd's are. The prompt has
no mtmd handle; its tiles' rows come from the encoder (ImageEmbeddings)."""

from __future__ import annotations

from typing import Callable

from smolcli.models.dims import VisionDims
from smolcli.models.smolvlm import IMAGE_MARKER
from smolcli.models.smolvlm_image_layout import TileSlot, image_prompt, merged
from smolcli.runtime.gguf.gguf_file import GGUFSummary
from smolcli.runtime.llama.prompt import Chunk, Prompt
from smolcli.runtime.vision.embedding_cache import image_digest
from smolcli.runtime.vision.encoder import LayoutEncoder
from smolcli.runtime.vision.images import RGBImage

TextTokens = Callable[[bytes, bool], tuple[int, list[int]]]  # (utf-8 text, add_special) -> (count, ids)


def own_layout_prompt(
    text: str,
    images: list[RGBImage],
    add_special: bool,
    encoder: LayoutEncoder | None,
    mmproj: GGUFSummary | None,
    text_tokens: TextTokens,
) -> Prompt:
    segments = text.split(IMAGE_MARKER)
    pieces: list = [segments[0]]
    for image, segment in zip(images, segments[1:], strict=True):
        digest = image_digest(image.width, image.height, image.pixels)
        encoder.remember(digest, image)
        grid = encoder.tile_grid(mmproj, image)
        pieces += [(digest, p) if isinstance(p, TileSlot) else p for p in image_prompt(grid.rows, grid.columns)]
        pieces.append(segment)
    pieces = merged(pieces)
    if add_special and (not pieces or not isinstance(pieces[0], str)):
        pieces.insert(0, "")  # BOS (where the vocabulary has one) before an image that opens the prompt
    tile_tokens = VisionDims.from_gguf(mmproj.metadata).tokens_per_tile if images else 0
    chunks = []
    for index, piece in enumerate(pieces):
        if isinstance(piece, str):
            chunks.append(Chunk("text", *text_tokens(piece.encode("utf-8"), add_special and index == 0)))
        else:
            digest, slot = piece
            chunks.append(Chunk("image", tile_tokens, image=digest, tile=slot.tile))
    return Prompt(None, chunks)
