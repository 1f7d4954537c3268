"""Where an image's tokens go in a SmolVLM prompt: the text transformers' Idefics3Processor writes around them.

An image cut into rows x columns tiles becomes, per tile, "<fake_token_around_image><row_R_col_C>" and
that tile's image tokens, a "\\n" after each row, then "\\n" and the global view:
"<fake_token_around_image><global-img>", its image tokens, "<fake_token_around_image>". An image that
fits one tile is the global view alone. (transformers: processing_idefics3._prompt_split_image and
_prompt_single_image; mtmd's MTMD_SLICE_TMPL_IDEFICS3 writes the same tokens.)

image_prompt gives the text pieces with the tiles' places in between, in the order the encoder
outputs the tiles (image_preprocess: row by row, the global view last). The runtime tokenizes each
run of text whole, with special tokens parsed: the last row's "\\n" and the one before the global
view are one run, "\\n\\n", which is one token as in transformers' own tokenization of the string.
"""

from __future__ import annotations

from dataclasses import dataclass

FAKE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE = "<global-img>"
TILE_LABEL = "<row_{row}_col_{column}>"  # 1-based
ROW_END = "\n"
BEFORE_GLOBAL_VIEW = "\n"


@dataclass(frozen=True)
class TileSlot:
    """The place of one tile's image tokens: its index among the image's tiles (the global view last)."""

    tile: int


def image_prompt(rows: int, columns: int) -> list[str | TileSlot]:
    """The pieces of one image's part of the prompt; rows = columns = 0: the global view alone."""
    pieces: list[str | TileSlot] = []
    for row in range(rows):
        for column in range(columns):
            pieces += [FAKE_TOKEN + TILE_LABEL.format(row=row + 1, column=column + 1), TileSlot(row * columns + column)]
        pieces.append(ROW_END)
    if rows:
        pieces.append(BEFORE_GLOBAL_VIEW)
    return pieces + [FAKE_TOKEN + GLOBAL_IMAGE, TileSlot(rows * columns), FAKE_TOKEN]


def merged(pieces: list) -> list:
    """Adjacent text pieces joined and empty ones dropped: each run of text is tokenized whole."""
    out: list = []
    for piece in pieces:
        if isinstance(piece, str) and out and isinstance(out[-1], str):
            out[-1] += piece
        elif not isinstance(piece, str) or piece:
            out.append(piece)
    return out
