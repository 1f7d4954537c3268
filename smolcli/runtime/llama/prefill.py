"""A tokenized prompt into a context's KV cache: text runs as tokens, image tiles as their embeddings (mtmd's
chunks through mtmd, our own layout's as rows), or a whole prompt of our own layout as one run of embedding rows
(text as token_embd's rows) in n_batch batches: one llama_decode per text run and per tile cost 25% more prefill
on 256M. Counts image and text tokens and prefill time; getting a tile's embeddings is encode time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from smolcli.runtime.llama.context import LlamaContext
from smolcli.runtime.llama.image_embeddings import ImageEmbeddings
from smolcli.runtime.llama.prompt import Chunk, Prompt
from smolcli.runtime.vision.images import RGBImage

if TYPE_CHECKING:
    from smolcli.runtime.llama.engine import Engine


class Prefill:
    def __init__(self, engine: "Engine", images: ImageEmbeddings):
        self._engine = engine
        self._images = images

    def evaluate(self, prompt: Prompt, context: LlamaContext) -> None:
        """Run every chunk of the prompt through the model, appending to the context's cache."""
        context.check_fits(prompt.n_tokens)
        if prompt.handle is None:  # our own layout: text runs, and tiles for the engine's LayoutEncoder
            self.evaluate_chunks(context, prompt.chunks, self.as_rows(prompt))
            return
        for index, described in enumerate(prompt.chunks):
            if described.kind == "text":
                context.decode_tokens(described.tokens)
            else:
                self.decode_image_chunk(context, prompt.mtmd_chunk(index), described)

    def evaluate_chunks(self, context: LlamaContext, chunks: list[Chunk], as_rows: bool) -> None:
        """Some of an own-layout prompt's chunks, in order: as one run of rows, or a decode per text run and tile
        (a prompt evaluated in two parts, around its prefix's state, keeps one way for both: as_rows(prompt))."""
        if as_rows:
            self.evaluate_rows(context, [(chunk, None) for chunk in chunks])
            return
        for chunk in chunks:
            if chunk.kind == "text":
                context.decode_tokens(chunk.tokens)
            else:
                self._decode_tile(context, chunk)

    def as_rows(self, prompt: Prompt) -> bool:
        """Whether this own-layout prompt goes in as one run of embedding rows."""
        wanted = self._engine.options.prefill_as_rows
        if wanted is None:
            wanted = any(chunk.kind == "image" for chunk in prompt.chunks)
        return wanted and self._engine.token_embeddings() is not None

    def can_prefill_as_rows(self) -> bool:
        """Whether a prompt with images on our own layout goes in as one run of rows (video_prompt asks)."""
        return self._engine.options.prefill_as_rows is not False and self._engine.token_embeddings() is not None

    def evaluate_rows(
        self, context: LlamaContext, pieces: list[tuple[Chunk, Callable | None]], after: Callable | None = None
    ) -> None:
        """Chunks in prompt order as one run of embedding rows, n_batch at a time: text runs looked up, tiles
        from the cache or the ONNX encoder (with an encode, what makes them: a video frame's frame_encoder).
        after(chunk, encode): called once each piece's rows are in. The counters split as the per-chunk path's
        do: getting a tile's embeddings is encode_seconds, the lookups and the decodes prefill_seconds."""
        counters = self._engine.counters
        lookup = self._engine.token_embeddings()
        n_tokens = sum(chunk.n_tokens for chunk, _ in pieces)
        stream = context.row_stream(lookup.n_embd, n_tokens)
        try:
            for chunk, encode in pieces:
                started = time.perf_counter()
                if chunk.kind == "text":
                    rows = lookup.rows(chunk.tokens)
                    counters.text_tokens += chunk.n_tokens
                else:
                    rows = self._images.tile_rows(chunk, encode)
                    counters.image_tokens += chunk.n_tokens
                    encoded = time.perf_counter()
                    counters.encode_seconds += encoded - started
                    started = encoded
                stream.append(rows)
                counters.prefill_seconds += time.perf_counter() - started
                if after is not None:
                    after(chunk, encode)
            started = time.perf_counter()
            stream.finish()
            counters.prefill_seconds += time.perf_counter() - started
        finally:
            context.n_past = stream.n_past  # what reached the cache, so a failed prompt can be rewound

    def decode_image_chunk(
        self, context: LlamaContext, chunk, described: Chunk, mtmd_ctx=None, mmproj_path=None
    ) -> None:
        """One mtmd image chunk into the cache; mtmd_ctx and mmproj_path: another vision context's chunk (video
        frames). mtmd's chunks are mtmd's to encode: the ONNX encoder's tiles come through our own layout."""
        engine = self._engine
        mtmd_ctx = mtmd_ctx or engine.mtmd_ctx
        started = time.perf_counter()
        embeddings = self._images.mtmd_embeddings(chunk, described, mtmd_ctx, mmproj_path)
        encoded = time.perf_counter()
        engine.mtmd.decode(mtmd_ctx, context, chunk, embeddings)
        engine.counters.image_tokens += described.n_tokens
        engine.counters.encode_seconds += encoded - started
        engine.counters.prefill_seconds += time.perf_counter() - encoded

    def decode_frame(self, context: LlamaContext, described: Chunk, frame: RGBImage) -> None:
        """A video frame (one tile's square, untiled) through the ONNX encoder or the cache, into the KV cache."""
        self._decode_tile(context, described, self.frame_encoder(frame))

    def frame_encoder(self, frame: RGBImage) -> Callable:
        """What makes a video frame's embeddings: the ONNX encoder on the frame as it is (one tile's square)."""
        engine = self._engine
        encoder = engine.options.vision_encoder
        return lambda: encoder.frame_embeddings(engine.files.mmproj, frame)

    def _decode_tile(self, context: LlamaContext, described: Chunk, encode=None) -> None:
        """One tile of our own layout: its embeddings from the cache or the engine's LayoutEncoder, into the KV cache."""
        counters = self._engine.counters
        started = time.perf_counter()
        rows = self._images.tile_rows(described, encode)
        encoded = time.perf_counter()
        context.decode_rows(rows)
        counters.image_tokens += described.n_tokens
        counters.encode_seconds += encoded - started
        counters.prefill_seconds += time.perf_counter() - encoded
