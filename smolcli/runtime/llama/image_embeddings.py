"""Where an image chunk's embeddings come from: the embedding cache, else its encoder (mtmd, or the engine's
LayoutEncoder outside llama.cpp), stored for next time. Counts encodes, cache hits and misses, and the time
getting them takes (encode_seconds)."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Callable

import numpy as np

from smolcli.errors import SmolcliError
from smolcli.runtime.llama.prompt import Chunk
from smolcli.runtime.vision.embedding_cache import EmbeddingKey

if TYPE_CHECKING:
    from smolcli.runtime.llama.engine import Engine


class ImageEmbeddings:
    def __init__(self, engine: "Engine"):
        self._engine = engine
        self._mmproj_digest: str | None = None  # hashed on the first image, only with a cache
        self.last_engine = "mtmd"  # which encoder made the last image's embeddings (Answer.vision_engine)

    def forget_digest(self) -> None:
        """The engine's mmproj changed: its digest is hashed again on the next image."""
        self._mmproj_digest = None

    def mtmd_embeddings(self, chunk, described: Chunk, mtmd_ctx, mmproj_path=None):
        """An mtmd image chunk's embeddings (a float buffer): from the cache, or mtmd's encoder (stored).
        mmproj_path: the chunk is another vision context's (a video frame's), keyed by that file."""
        key = self._key(described, mmproj_path)
        embeddings = self._cached(key) if key is not None else None
        if embeddings is None:
            embeddings = self.encode_mtmd(chunk, key, mtmd_ctx)
        self.last_engine = "mtmd"
        return embeddings

    def encode_mtmd(self, chunk, key: EmbeddingKey | None, mtmd_ctx):
        """Run mtmd's encoder on one chunk; with a key, store its output for next time."""
        engine = self._engine
        embeddings = engine.mtmd.encode(mtmd_ctx, chunk)
        engine.counters.images_encoded += 1
        if key is not None:
            flat = np.ctypeslib.as_array(embeddings, shape=(key.n_tokens * key.n_embd,))
            engine.options.embedding_cache.put(key, flat)
        return embeddings

    def tile_rows(self, described: Chunk, encode: Callable | None = None) -> np.ndarray:
        """A tile's float32 [n_tokens, n_embd] rows on our own layout: from the cache, or the engine's LayoutEncoder
        (stored for next time). encode: what makes them instead of the encoder's tile of a remembered image
        (a video frame's frame_encoder)."""
        key = self._key(described)
        stored = self._cached(key) if key is not None else None
        embeddings = (
            np.ctypeslib.as_array(stored) if stored is not None else self._encode_outside(described, key, encode)
        )
        self.last_engine = self._engine.layout_encoder.name
        return embeddings.reshape(described.n_tokens, -1)

    def _encode_outside(self, described: Chunk, key: EmbeddingKey | None, encode=None) -> np.ndarray:
        engine = self._engine
        if encode is None:
            tile = engine.layout_encoder.tile_embeddings(engine.files.mmproj, described.image, described.tile)
        else:
            tile = encode()
        n_embd = engine.n_embd
        if tile is None or tile.shape != (described.n_tokens, n_embd):
            fix = "; use {vision_engine=mtmd}" if engine.vision_outside_mtmd else ""
            raise SmolcliError(
                f"the vision encoder ({engine.layout_encoder.name}) gave {None if tile is None else tile.shape} "
                f"embeddings where the model expects {(described.n_tokens, n_embd)}{fix}"
            )
        tile = np.ascontiguousarray(tile, dtype=np.float32).reshape(-1)
        engine.counters.images_encoded += 1
        if key is not None:
            engine.options.embedding_cache.put(key, tile)
        return tile

    def _cached(self, key: EmbeddingKey):
        counters = self._engine.counters
        stored = self._engine.options.embedding_cache.get(key)
        if stored is None:
            counters.cache_misses += 1
            return None
        counters.cache_hits += 1
        return (ctypes.c_float * stored.size).from_buffer(stored)

    def _key(self, described: Chunk, mmproj_path=None) -> EmbeddingKey | None:
        engine = self._engine
        cache = engine.options.embedding_cache
        if cache is None or not described.image:
            return None
        if mmproj_path is not None:
            digest = cache.file_digest(mmproj_path)  # another vision context's chunk: mtmd's numbers
        else:
            if self._mmproj_digest is None:
                tag = engine.layout_encoder.cache_tag if engine.layout_encoder is not None else None
                self._mmproj_digest = cache.encoder_digest(engine.files.mmproj.path, tag)
            digest = self._mmproj_digest
        # an encoder's output holds n_tokens rows of the language model's input width
        return EmbeddingKey(described.image, digest, described.tile, described.n_tokens, engine.n_embd)
