"""Keep a constrained answer valid UTF-8: mask the tokens whose bytes would break the text.

llama.cpp's grammar sampler works on code points and trusts the bytes it is given: a byte-level
token that ends inside a character may be followed by one that does not continue it, and the
grammar then counts characters (and even quotes) differently than any UTF-8 decoder will read
them. A string held to maxLength 10 can come out as 14 characters, or the JSON can break. So,
with a grammar, each step first masks (sets to -inf in llama.cpp's own logits buffer, which the
sampler chain reads) every token that would make the answer so far invalid UTF-8.
"""

from __future__ import annotations

import codecs

import numpy as np


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte <= 0xBF


class Utf8Vocabulary:
    """Each token's bytes, and which tokens can follow a character boundary: computed once per model."""

    def __init__(self, pieces: list[bytes]):
        self.pieces = pieces
        self.bad_at_boundary = np.zeros(len(pieces), dtype=bool)
        self.starts_with_continuation = np.zeros(len(pieces), dtype=bool)
        for token, piece in enumerate(pieces):
            if piece and _is_continuation(piece[0]):
                self.starts_with_continuation[token] = True
            try:
                # valid on its own, a last character left incomplete allowed
                codecs.getincrementaldecoder("utf-8")("strict").decode(piece, final=False)
            except UnicodeDecodeError:
                self.bad_at_boundary[token] = True
        self.continuation_tokens = np.flatnonzero(self.starts_with_continuation)


class Utf8Guard:
    """The state of one answer: the bytes of a character begun but not finished."""

    def __init__(self, vocabulary: Utf8Vocabulary):
        self.vocabulary = vocabulary
        self.pending = b""

    def mask(self, logits: np.ndarray) -> None:
        """Set the logit of every token that cannot come next to -inf, in place."""
        vocabulary = self.vocabulary
        if not self.pending:
            logits[vocabulary.bad_at_boundary | vocabulary.starts_with_continuation] = -np.inf
            return
        # inside a character: only tokens that continue it exactly (checked one by one: few tokens do)
        allowed = np.zeros(len(logits), dtype=bool)
        for token in vocabulary.continuation_tokens:
            if self._valid(self.pending + vocabulary.pieces[token]):
                allowed[token] = True
        logits[~allowed] = -np.inf

    def advance(self, piece: bytes) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        try:
            decoder.decode(self.pending + piece, final=False)
        except UnicodeDecodeError:
            self.pending = b""  # only end-of-generation tokens get here unmasked
            return
        self.pending = decoder.getstate()[0]

    @staticmethod
    def _valid(data: bytes) -> bool:
        try:
            codecs.getincrementaldecoder("utf-8")("strict").decode(data, final=False)
        except UnicodeDecodeError:
            return False
        return True
