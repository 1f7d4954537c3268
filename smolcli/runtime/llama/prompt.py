"""A tokenized prompt: text runs and image tiles in order, as mtmd cut it (with its handle) or as our own layout did."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Chunk:
    kind: str  # "text" or "image"
    n_tokens: int
    tokens: list[int] = field(default_factory=list)  # text chunks only
    image: str = ""  # image chunks, with an embedding cache: the digest of the image they come from
    tile: int = 0  # image chunks: the index among that image's chunks


class Prompt:
    """A tokenized prompt's chunks; with mtmd's handle (None on our own layout), owned until freed."""

    def __init__(self, handle, chunks: list[Chunk]):
        self.handle = handle
        self.chunks = chunks

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.chunks)

    @property
    def n_image_tokens(self) -> int:
        return sum(c.n_tokens for c in self.chunks if c.kind == "image")

    def mtmd_chunk(self, index: int):
        """mtmd's own chunk at this index (a prompt mtmd tokenized)."""
        from llama_cpp import mtmd_cpp

        return mtmd_cpp.mtmd_input_chunks_get(self.handle, index)

    def free(self) -> None:
        if self.handle is not None:
            from llama_cpp import mtmd_cpp

            mtmd_cpp.mtmd_input_chunks_free(self.handle)
            self.handle = None
