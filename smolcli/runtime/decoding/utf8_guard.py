"""Keep a constrained answer valid UTF-8: mask the tokens whose bytes would break the text.

llama.cpp's grammar sampler works on code points and trusts the bytes it is given: a byte-level
token that ends inside a character may be followed by one that does not continue it, and the
grammar then counts characters (and even quotes) differently than any UTF-8 decoder will read
them. A string held to maxLength 10 can come out as 14 characters, or the JSON can break. So,
with a grammar, each step first masks (sets to -inf in llama.cpp's own logits buffer, which the
sampler chain reads) every token that would make the answer so far invalid UTF-8.

Which bytes may start or continue a character is decided here, from the Unicode table of
well-formed sequences, not by Python's incremental decoder: that one keeps a truncated surrogate
(ED A0..BF) as "not finished yet" (it must, for the surrogatepass handler), so an answer could
reach a state from which no byte is valid. The guard then masked every token, the sampler drew
one of them anyway (a control character), and both the text and the grammar broke.
"""

from __future__ import annotations

import numpy as np

# lead byte -> (length of its sequence, lowest and highest allowed second byte); Unicode table 3-7
_SEQUENCES: dict[int, tuple[int, int, int]] = {}
for _lead in range(0xC2, 0xE0):
    _SEQUENCES[_lead] = (2, 0x80, 0xBF)
for _lead in range(0xE0, 0xF0):
    _SEQUENCES[_lead] = (
        3,
        0xA0 if _lead == 0xE0 else 0x80,
        0x9F if _lead == 0xED else 0xBF,
    )  # no overlong, no surrogate
for _lead in range(0xF0, 0xF5):
    _SEQUENCES[_lead] = (4, 0x90 if _lead == 0xF0 else 0x80, 0x8F if _lead == 0xF4 else 0xBF)  # nothing past U+10FFFF


def unfinished_character(data: bytes) -> bytes | None:
    """The bytes of the character `data` ends inside (b"" when none), or None if data cannot begin UTF-8 text.

    Every prefix this accepts can still be finished into a valid character, unlike one with a
    truncated surrogate or overlong form.
    """
    if data.isascii():
        return b""
    at, size = 0, len(data)
    while at < size:
        lead = data[at]
        if lead < 0x80:
            at += 1
            continue
        if lead not in _SEQUENCES:
            return None
        length, low, high = _SEQUENCES[lead]
        end = min(at + length, size)
        if end > at + 1 and not low <= data[at + 1] <= high:
            return None
        if any(not 0x80 <= byte <= 0xBF for byte in data[at + 2 : end]):
            return None
        if at + length > size:
            return data[at:]
        at += length
    return b""


class Utf8Vocabulary:
    """Each token's bytes, classified once per model for the guard's masks."""

    def __init__(self, pieces: list[bytes]):
        self.pieces = pieces
        # at a character boundary: no token that is not the start of valid text (a last character left open is fine)
        self.blocked_at_boundary = np.array([unfinished_character(piece) is None for piece in pieces], dtype=bool)
        # inside a character: only tokens that begin with continuation bytes can come, described by
        # their first byte, length, leading continuation bytes (up to 3, all a character can still
        # need), and whether what follows the first 1, 2 or 3 bytes is valid on its own
        tokens = [token for token, piece in enumerate(pieces) if piece and 0x80 <= piece[0] <= 0xBF]
        self.continuation_tokens = np.array(tokens, dtype=np.int64)
        self.first_byte = np.array([pieces[t][0] for t in tokens], dtype=np.int64)
        self.length = np.array([len(pieces[t]) for t in tokens], dtype=np.int64)
        self.continuations = np.array([_leading_continuations(pieces[t]) for t in tokens], dtype=np.int64)
        self.valid_after = {
            need: np.array([unfinished_character(pieces[t][need:]) is not None for t in tokens], dtype=bool)
            for need in (1, 2, 3)
        }

    def continuing(self, pending: bytes) -> np.ndarray:
        """The tokens that can follow `pending`, an unfinished character: they finish it, or go on with it."""
        length, low, high = _SEQUENCES[pending[0]]
        need = length - len(pending)
        if len(pending) > 1:
            low, high = 0x80, 0xBF  # the second byte, the only one with narrower bounds, is in
        fits = (self.first_byte >= low) & (self.first_byte <= high)
        short = self.length <= need  # all continuation bytes, the character still unfinished after it
        fits &= np.where(short, self.continuations == self.length, self.continuations >= need)
        fits &= short | self.valid_after[need]
        return self.continuation_tokens[fits]


def _leading_continuations(piece: bytes) -> int:
    count = 0
    while count < min(len(piece), 3) and 0x80 <= piece[count] <= 0xBF:
        count += 1
    return count


class Utf8Guard:
    """The state of one answer: the bytes of a character begun but not finished."""

    def __init__(self, vocabulary: Utf8Vocabulary):
        self.vocabulary = vocabulary
        self.pending = b""
        self.blocked = vocabulary.blocked_at_boundary  # what the last mask() set to -inf

    def mask(self, logits: np.ndarray) -> None:
        """Set the logit of every token that cannot come next to -inf, in place."""
        vocabulary = self.vocabulary
        if not self.pending:
            self.blocked = vocabulary.blocked_at_boundary
        else:
            self.blocked = np.ones(len(logits), dtype=bool)
            self.blocked[vocabulary.continuing(self.pending)] = False
        logits[self.blocked] = -np.inf

    def allows(self, token: int) -> bool:
        """Whether the last mask() left this token possible."""
        return not self.blocked[token]

    def advance(self, piece: bytes) -> None:
        pending = unfinished_character(self.pending + piece)
        if pending is None:
            raise ValueError(f"{piece!r} after {self.pending!r} is not UTF-8: the guard's mask was not followed")
        self.pending = pending
