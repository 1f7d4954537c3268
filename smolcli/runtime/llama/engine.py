"""One loaded model pair: llama.cpp model + context, mtmd vision context, and the KV cache position.

Our own layer over llama-cpp-python's C bindings, so that the prompt, the image
chunks and the cache stay under our control: a new turn evaluates only what is new.

With an ONNX vision encoder (options.vision_encoder) that takes the mmproj, no mtmd context is made:
the prompt's image layout is our own (models.smolvlm_image_layout, the grid from image_preprocess)
and the tiles' embeddings go into the cache through a llama_batch (embedding_batch), so the
mmproj's weights are read only to build the ONNX file, never held in memory beside it.
Such a prompt decodes as one run of rows, its text as token_embd's rows (token_embeddings), in
n_batch batches: one llama_decode per text run and per tile cost 25% more prefill on 256M.
"""

from __future__ import annotations

import ctypes
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from smolcli.errors import BadInput, ModelFileError, SmolcliError
from smolcli.models.dims import VisionDims
from smolcli.models.smolvlm import IMAGE_MARKER
from smolcli.models.smolvlm_image_layout import TileSlot, image_prompt, merged
from smolcli.runtime.gguf.gguf_file import GGUFSummary, read_gguf
from smolcli.runtime.gguf.model_files import ModelFiles
from smolcli.runtime.gguf.token_embeddings import TokenEmbeddings, plain_lookup_refusal
from smolcli.runtime.llama.context import LlamaContext, context_full  # noqa: F401 - context_full: its home
from smolcli.runtime.llama.counters import Counters
from smolcli.runtime.llama.quant_types import KV_CACHE_TYPES as CACHE_TYPES  # name -> GGML type
from smolcli.runtime.vision.embedding_cache import EmbeddingCache, EmbeddingKey, image_digest
from smolcli.runtime.vision.image_tiles import fit_for_tiling
from smolcli.runtime.vision.images import RGBImage
from smolcli.util.threads import usable_cores


@dataclass
class EngineOptions:
    n_gpu_layers: int = 0
    mmproj_offload: bool = True
    threads: int | None = None
    cache_type: str = "f16"
    n_batch: int = 2048
    # llama.cpp's CPU_REPACK: a second, reordered copy of the CPU weights for its faster matrix kernels
    repack_weights: bool = False
    verbose: bool = False
    embedding_cache: EmbeddingCache | None = None  # None: every image tile goes through the encoder
    lora: tuple[tuple[str, float], ...] = ()  # LoRA adapter GGUFs and their scales, stacked on every context
    # runtime.onnx_vision.OnnxVisionEncoder: image tiles encoded by ONNX Runtime, mtmd only tokenizes and decodes
    vision_encoder: object | None = None
    # None: on for a quantized V cache (it needs it), else llama.cpp's choice (on, on the CPU). Off is exact over long
    # caches (CPU flash attention moves the logits when a few tokens attend over many: benchmarks/flash_attention_logits.py)
    # but costs memory: 2.2B's compute buffer at n_ctx 8192 is 556 MiB instead of 104 (llama.cpp's log), and 15% of prefill
    flash_attention: bool | None = None
    # our own layout's prompts as one run of embedding rows (text as token_embd's rows): None when they hold
    # images, True for every prompt, False never (one decode per text run and per tile; tests and benchmarks)
    prefill_as_rows: bool | None = None


@dataclass
class Chunk:
    kind: str  # "text" or "image"
    n_tokens: int
    tokens: list[int] = field(default_factory=list)  # text chunks only
    image: str = ""  # image chunks, with an embedding cache: the digest of the image they come from
    tile: int = 0  # image chunks: the index among that image's chunks


class Prompt:
    """A tokenized prompt: mtmd chunks (text runs and image tiles), owned until freed."""

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


def default_threads() -> int:
    return usable_cores()


class Engine:
    def __init__(self, files: ModelFiles, options: EngineOptions):
        import llama_cpp
        from llama_cpp import mtmd_cpp

        from smolcli.runtime.llama import llama_logging

        self._llama = llama_cpp
        self._mtmd = mtmd_cpp
        self.files = files
        self.options = options
        self.counters = Counters()
        self._contexts: list[LlamaContext] = []  # every context made and not yet freed: freed before the model
        self.mtmd_ctx = None
        self.vision_outside_mtmd = False  # the mmproj's images go through options.vision_encoder, no mtmd context
        self._mmproj_digest: str | None = None  # hashed on the first image, only with a cache
        self.vision_engine = "mtmd"  # which encoder made the last image's embeddings
        self._utf8_vocabulary = None
        self._token_embeddings: TokenEmbeddings | None = None  # mapped on the first prompt fed as rows
        self.threads = options.threads or default_threads()
        llama_logging.configure(options.verbose)
        llama_cpp.llama_backend_init()

        started = time.perf_counter()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = options.n_gpu_layers
        params.use_extra_bufts = options.repack_weights
        self.model = llama_cpp.llama_model_load_from_file(str(files.model.path).encode(), params)
        if not self.model:
            self.model = None
            raise ModelFileError(
                f"{files.model.path}: llama.cpp could not load this model; rerun with {{verbose}} for its log",
                path=files.model.path,
            )
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.adapters = []
        try:
            self._load_adapters()
        except BaseException:
            self.close()
            raise
        self.load_seconds = time.perf_counter() - started
        if files.mmproj is not None:
            self.files = dataclasses.replace(files, mmproj=None)
            try:
                self.use_mmproj(files.mmproj)
            except BaseException:
                self.close()  # __exit__ never runs for a constructor that raised
                raise

    def use_mmproj(self, mmproj: GGUFSummary, mtmd_only: bool = False) -> None:
        """Load the vision encoder from this mmproj, in place of the one loaded (a no-op when it is the same file).

        The library loads it on the first image, at the detail that image asks for. With an ONNX encoder in
        the options, that encoder takes it unless mtmd_only (a memory plan that only mtmd fits) or it refuses.
        """
        started = time.perf_counter()
        encoder = None if mtmd_only else self.options.vision_encoder
        # the encoder's session is built now (or refused: mtmd after one stderr line, or an error under onnx)
        outside = encoder is not None and encoder.engine_for(mmproj) != "mtmd"
        loaded = self.vision_outside_mtmd if outside else self.mtmd_ctx is not None
        if self.files.mmproj is not None and self.files.mmproj.path == mmproj.path and loaded:
            return
        mtmd = self._mtmd
        if self.mtmd_ctx is not None:
            mtmd.mtmd_free(self.mtmd_ctx)
            self.mtmd_ctx = None
        self.vision_outside_mtmd = outside
        if self.vision_outside_mtmd:
            self.files = dataclasses.replace(self.files, mmproj=mmproj)
            self._mmproj_digest = None
            self.load_seconds += time.perf_counter() - started
            return
        self.mtmd_ctx = self.open_vision_context(mmproj, "")
        self.files = dataclasses.replace(self.files, mmproj=mmproj)
        self._mmproj_digest = None
        self.load_seconds += time.perf_counter() - started

    def open_vision_context(self, mmproj: GGUFSummary, purpose: str = " for video frames"):
        """An mtmd context over this model from this mmproj (free it with free_vision_context)."""
        mtmd = self._mtmd
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = self.options.mmproj_offload and self.options.n_gpu_layers != 0
        params.n_threads = self.threads
        params.print_timings = False
        params.warmup = False
        handle = mtmd.mtmd_init_from_file(str(mmproj.path).encode(), self.model, params)
        if not handle:
            log = "" if purpose else "; rerun with {verbose} for its log"
            raise ModelFileError(f"{mmproj.path}: mtmd could not load this mmproj{purpose}{log}", path=mmproj.path)
        return handle

    def free_vision_context(self, handle) -> None:
        self._mtmd.mtmd_free(handle)

    def _load_adapters(self) -> None:
        """llama.cpp's LoRA adapters, loaded once with the model and set on each context it creates."""
        for path, _ in self.options.lora:
            adapter = self._llama.llama_adapter_lora_init(self.model, str(path).encode())
            if not adapter:
                raise ModelFileError(
                    f"{path}: llama.cpp could not load this LoRA adapter on {self.files.model.path.name} "
                    "(made for another base?); rerun with {verbose} for its log",
                    path=path,
                )
            self.adapters.append(adapter)  # freed with the model

    def _set_adapters(self, context: LlamaContext) -> None:
        if not self.adapters:
            return
        llama_cpp = self._llama
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * len(self.adapters))(*self.adapters)
        scales = (ctypes.c_float * len(self.adapters))(*(scale for _, scale in self.options.lora))
        if llama_cpp.llama_set_adapters_lora(context.handle, handles, len(self.adapters), scales) != 0:
            raise SmolcliError("llama.cpp could not apply the LoRA adapters to the context")

    # --- context -------------------------------------------------------------------------

    @property
    def n_ctx_train(self) -> int:
        return int(self._llama.llama_model_n_ctx_train(self.model))

    def new_context(self, n_ctx: int, cache_type: str | None = None) -> LlamaContext:
        """A context of its own for a conversation: n_ctx positions of a `cache_type` KV cache (the options' by
        default), with the model's LoRA adapters set. The caller owns it (free() it); the engine frees what
        is left when it closes, before the weights."""
        llama_cpp = self._llama
        cache_type = cache_type or self.options.cache_type
        cache = CACHE_TYPES[cache_type]
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = min(self.options.n_batch, n_ctx)
        params.n_ubatch = min(512, n_ctx)
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.type_k = cache
        params.type_v = cache
        params.flash_attn_type = self._flash_attention_type(cache)
        handle = llama_cpp.llama_init_from_model(self.model, params)
        if not handle:
            # the usual cause for a quantized cache: the model's head size is not a multiple of the block size
            fix = "try {cache_type=f16}" if cache != 1 else "lower {ctx} or free memory"
            raise SmolcliError(
                f"llama.cpp could not create a {n_ctx}-token context with a {cache_type} KV cache; "
                f"{fix} (rerun with {{verbose}} for its log)"
            )
        context = LlamaContext(llama_cpp, handle, int(params.n_batch), cache_type, self.n_vocab, self.counters)
        self._contexts = [made for made in self._contexts if not made.freed] + [context]
        try:
            self._set_adapters(context)
        except BaseException:
            context.free()
            raise
        return context

    def _flash_attention_type(self, cache: int) -> int:
        llama_cpp = self._llama
        wanted = self.options.flash_attention
        if wanted is None and cache != CACHE_TYPES["f16"]:  # a quantized V cache needs flash attention
            wanted = True
        if wanted is None:
            return llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
        return llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if wanted else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED

    # --- prompts -------------------------------------------------------------------------

    def tokenize(self, text: str, images: list[RGBImage], add_special: bool = False, vision_ctx=None) -> Prompt:
        """Text with one `<image>` marker per image, in order, into text and image chunks.

        vision_ctx: another mtmd context over this model (open_vision_context's), to cut the images as its
        mmproj does (video frames); the chunk list and the images' ids are still this engine's."""
        mtmd = self._mtmd
        mtmd_ctx = vision_ctx or self.mtmd_ctx
        if text.count(IMAGE_MARKER) != len(images):
            raise BadInput(f"the prompt has {text.count(IMAGE_MARKER)} {IMAGE_MARKER} markers for {len(images)} images")
        if images and mtmd_ctx is None and not self.vision_outside_mtmd:
            raise ModelFileError("images need the vision encoder: pass the mmproj file with {mmproj}")
        images = [self._fit_for_tiling(img) for img in images]
        if mtmd_ctx is None:  # text alone, or images through the ONNX encoder
            return self._own_layout_prompt(text, images, add_special)
        marker = mtmd.mtmd_default_marker().decode()
        encoded = text.replace(IMAGE_MARKER, marker).encode("utf-8")
        bitmaps = [
            mtmd.mtmd_bitmap_init(
                img.width, img.height, (ctypes.c_uint8 * len(img.pixels)).from_buffer_copy(img.pixels)
            )
            for img in images
        ]
        copies: dict[str, int] = {}  # digest -> how many times that image is in the prompt
        if self.options.embedding_cache is not None:
            for img, bitmap in zip(images, bitmaps, strict=True):
                # mtmd copies a bitmap's id onto each of its chunks: how a tile finds its cache entry
                digest = image_digest(img.width, img.height, img.pixels)
                copies[digest] = copies.get(digest, 0) + 1
                mtmd.mtmd_bitmap_set_id(bitmap, digest.encode())
        handle = mtmd.mtmd_input_chunks_init()
        try:
            inp = mtmd.mtmd_input_text(encoded, len(encoded), add_special, True)
            array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            status = mtmd.mtmd_tokenize(mtmd_ctx, handle, ctypes.byref(inp), array, len(bitmaps))
            if status != 0:
                mtmd.mtmd_input_chunks_free(handle)
                raise SmolcliError(f"mtmd could not tokenize the prompt (status {status})")
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        return Prompt(handle, self._describe(handle, copies))

    def _fit_for_tiling(self, image: RGBImage) -> RGBImage:
        return image if self.files.mmproj is None else fit_for_tiling(self.files.mmproj, image)

    def _own_layout_prompt(self, text: str, images: list[RGBImage], add_special: bool) -> Prompt:
        """Text runs and image tiles laid out as transformers' processor does, without mtmd (no handle).

        A tile is keyed by its image's content and its index within that image, as mtmd's are.
        """
        encoder = self.options.vision_encoder
        segments = text.split(IMAGE_MARKER)
        pieces: list = [segments[0]]
        for image, segment in zip(images, segments[1:], strict=True):
            digest = image_digest(image.width, image.height, image.pixels)
            encoder.remember(digest, image)
            grid = encoder.tile_grid(self.files.mmproj, image)
            pieces += [(digest, p) if isinstance(p, TileSlot) else p for p in image_prompt(grid.rows, grid.columns)]
            pieces.append(segment)
        pieces = merged(pieces)
        if add_special and (not pieces or not isinstance(pieces[0], str)):
            pieces.insert(0, "")  # BOS (where the vocabulary has one) before an image that opens the prompt
        tile_tokens = VisionDims.from_gguf(self.files.mmproj.metadata).tokens_per_tile if images else 0
        chunks = []
        for index, piece in enumerate(pieces):
            if isinstance(piece, str):
                chunks.append(Chunk("text", *self.text_tokens(piece.encode("utf-8"), add_special and index == 0)))
            else:
                digest, slot = piece
                chunks.append(Chunk("image", tile_tokens, image=digest, tile=slot.tile))
        return Prompt(None, chunks)

    def text_tokens(self, encoded: bytes, add_special: bool) -> tuple[int, list[int]]:
        llama_cpp = self._llama
        capacity = len(encoded) + 8
        buffer = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self.vocab, encoded, len(encoded), buffer, capacity, add_special, True)
        if count < 0:
            raise SmolcliError("the prompt could not be tokenized")
        return count, list(buffer[:count])

    def _describe(self, handle, copies: dict[str, int]) -> list[Chunk]:
        """The prompt's chunks; an image tile is keyed by its image's content and its index within that image,
        so the same image given twice has the same keys both times (and the second copy hits the cache)."""
        mtmd = self._mtmd
        chunks = []
        tiles_seen: dict[str, int] = {}
        tiles_per_copy = self._tiles_per_copy(handle, copies)
        for index in range(mtmd.mtmd_input_chunks_size(handle)):
            chunk = mtmd.mtmd_input_chunks_get(handle, index)
            n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t()
                pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                chunks.append(Chunk("text", n_tokens, [pointer[i] for i in range(count.value)]))
            else:
                image = (mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode()
                seen = tiles_seen.get(image, 0)
                tiles_seen[image] = seen + 1
                chunks.append(Chunk("image", n_tokens, image=image, tile=seen % tiles_per_copy.get(image, seen + 1)))
        return chunks

    def _tiles_per_copy(self, handle, copies: dict[str, int]) -> dict[str, int]:
        mtmd = self._mtmd
        totals: dict[str, int] = {}
        for index in range(mtmd.mtmd_input_chunks_size(handle)):
            chunk = mtmd.mtmd_input_chunks_get(handle, index)
            if mtmd.mtmd_input_chunk_get_type(chunk) != mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                image = (mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode()
                totals[image] = totals.get(image, 0) + 1
        # copies of one image are cut alike, so each has total / copies tiles
        return {image: max(1, total // copies.get(image, 1)) for image, total in totals.items()}

    # --- evaluation ----------------------------------------------------------------------

    def evaluate(self, prompt: Prompt, context: LlamaContext) -> None:
        """Run every chunk of the prompt through the model, appending to the context's cache."""
        context.check_fits(prompt.n_tokens)
        if prompt.handle is None and self._as_rows(prompt):
            self.evaluate_rows(context, [(chunk, None) for chunk in prompt.chunks])
            return
        if prompt.handle is None:  # our own layout: text runs, and tiles for the ONNX encoder
            for chunk in prompt.chunks:
                if chunk.kind == "text":
                    context.decode_tokens(chunk.tokens)
                else:
                    self._decode_tile_outside_mtmd(context, chunk)
            return
        for index, described in enumerate(prompt.chunks):
            if described.kind == "text":
                context.decode_tokens(described.tokens)
            else:
                self.decode_image_chunk(context, prompt.mtmd_chunk(index), described)

    def _as_rows(self, prompt: Prompt) -> bool:
        wanted = self.options.prefill_as_rows
        if wanted is None:
            wanted = any(chunk.kind == "image" for chunk in prompt.chunks)
        return wanted and self.token_embeddings() is not None

    def can_prefill_as_rows(self) -> bool:
        """Whether a prompt with images on our own layout goes in as one run of rows (video_prompt asks)."""
        return self.options.prefill_as_rows is not False and self.token_embeddings() is not None

    def token_embeddings(self) -> TokenEmbeddings | None:
        """The model's token_embd rows, where feeding them equals feeding the tokens (else None)."""
        if self._token_embeddings is None:
            llama_cpp = self._llama
            adapters = [read_gguf(Path(path)) for path, _ in self.options.lora]  # headers only
            n_embd_inp = int(llama_cpp.llama_model_n_embd_inp(self.model))
            refusal = plain_lookup_refusal(self.files.model, n_embd_inp, self.n_vocab, adapters)
            self._token_embeddings = TokenEmbeddings(self.files.model) if refusal is None else False
        return self._token_embeddings or None

    def evaluate_rows(
        self, context: LlamaContext, pieces: list[tuple[Chunk, Callable | None]], after: Callable | None = None
    ) -> None:
        """Chunks in prompt order as one run of embedding rows, n_batch at a time: text runs looked up, tiles
        from the cache or the ONNX encoder (with an encode, what makes them: a video frame's frame_encoder).
        after(chunk, encode): called once each piece's rows are in. The counters split as the per-chunk path's
        do: getting a tile's embeddings is encode_seconds, the lookups and the decodes prefill_seconds."""
        lookup = self.token_embeddings()
        n_tokens = sum(chunk.n_tokens for chunk, _ in pieces)
        stream = context.row_stream(lookup.n_embd, n_tokens)
        try:
            for chunk, encode in pieces:
                started = time.perf_counter()
                if chunk.kind == "text":
                    rows = lookup.rows(chunk.tokens)
                    self.counters.text_tokens += chunk.n_tokens
                else:
                    rows = self._tile_rows(chunk, encode)
                    self.counters.image_tokens += chunk.n_tokens
                    encoded = time.perf_counter()
                    self.counters.encode_seconds += encoded - started
                    started = encoded
                stream.append(rows)
                self.counters.prefill_seconds += time.perf_counter() - started
                if after is not None:
                    after(chunk, encode)
            started = time.perf_counter()
            stream.finish()
            self.counters.prefill_seconds += time.perf_counter() - started
        finally:
            context.n_past = stream.n_past  # what reached the cache, so a failed prompt can be rewound

    def decode_image_chunk(
        self, context: LlamaContext, chunk, described: Chunk, mtmd_ctx=None, mmproj_path=None
    ) -> None:
        """One mtmd image chunk into the cache; mtmd_ctx and mmproj_path: another vision context's chunk (video frames).

        mtmd's chunks are mtmd's to encode: the ONNX encoder's tiles come through our own layout instead.
        """
        mtmd = self._mtmd
        mtmd_ctx = mtmd_ctx or self.mtmd_ctx
        started = time.perf_counter()
        key = self._embedding_key(described, mmproj_path)
        embeddings = self._cached_embeddings(key) if key is not None else None
        if embeddings is None:
            embeddings = self.encode_chunk(chunk, key, mtmd_ctx)
        self.vision_engine = "mtmd"
        encoded = time.perf_counter()
        new_n_past = self._llama.llama_pos(0)
        status = mtmd.mtmd_helper_decode_image_chunk(
            mtmd_ctx,
            context.handle,
            chunk,
            embeddings,
            context.n_past,
            0,
            context.n_batch,
            ctypes.byref(new_n_past),
            mtmd.mtmd_helper_post_decode_callback(0),
            None,
        )
        if status != 0:
            raise SmolcliError(f"llama.cpp failed to evaluate an image (status {status})")
        context.n_past = int(new_n_past.value)
        self.counters.image_tokens += described.n_tokens
        self.counters.encode_seconds += encoded - started
        self.counters.prefill_seconds += time.perf_counter() - encoded

    def decode_frame(self, context: LlamaContext, described: Chunk, frame: RGBImage) -> None:
        """A video frame (one tile's square, untiled) through the ONNX encoder or the cache, into the KV cache."""
        self._decode_tile_outside_mtmd(context, described, self.frame_encoder(frame))

    def frame_encoder(self, frame: RGBImage) -> Callable:
        """What makes a video frame's embeddings: the ONNX encoder on the frame as it is (one tile's square)."""
        encoder = self.options.vision_encoder
        return lambda: encoder.frame_embeddings(self.files.mmproj, frame)

    def _decode_tile_outside_mtmd(self, context: LlamaContext, described: Chunk, encode=None) -> None:
        """One tile of our own layout: its embeddings from the cache or the ONNX encoder, into the KV cache.

        encode: what makes the embeddings instead of the encoder's tile of a remembered image (video frames)."""
        started = time.perf_counter()
        rows = self._tile_rows(described, encode)
        encoded = time.perf_counter()
        context.decode_rows(rows)
        self.counters.image_tokens += described.n_tokens
        self.counters.encode_seconds += encoded - started
        self.counters.prefill_seconds += time.perf_counter() - encoded

    def _tile_rows(self, described: Chunk, encode=None) -> np.ndarray:
        """A tile's float32 [n_tokens, n_embd] embeddings: from the cache, or the ONNX encoder (stored for next time)."""
        key = self._embedding_key(described)
        stored = self._cached_embeddings(key) if key is not None else None
        embeddings = (
            np.ctypeslib.as_array(stored) if stored is not None else self._encode_outside_mtmd(described, key, encode)
        )
        self.vision_engine = self.options.vision_encoder.name
        return embeddings.reshape(described.n_tokens, -1)

    def encode_chunk(self, chunk, key: EmbeddingKey | None, mtmd_ctx=None):
        """Run the vision encoder on one chunk; with a key, store its output for next time."""
        mtmd = self._mtmd
        mtmd_ctx = mtmd_ctx or self.mtmd_ctx
        if mtmd.mtmd_encode_chunk(mtmd_ctx, chunk) != 0:
            raise SmolcliError("the vision encoder failed on an image")
        embeddings = mtmd.mtmd_get_output_embd(mtmd_ctx)
        self.counters.images_encoded += 1
        if key is not None:
            self.options.embedding_cache.put(key, np.ctypeslib.as_array(embeddings, shape=(key.n_tokens * key.n_embd,)))
        return embeddings

    def _encode_outside_mtmd(self, described: Chunk, key: EmbeddingKey | None, encode=None) -> np.ndarray:
        """The tile's float32 embeddings (flat) from options.vision_encoder; with a key, stored for next time."""
        if encode is None:
            tile = self.options.vision_encoder.tile_embeddings(self.files.mmproj, described.image, described.tile)
        else:
            tile = encode()
        n_embd = int(self._llama.llama_model_n_embd_inp(self.model))
        if tile is None or tile.shape != (described.n_tokens, n_embd):
            raise SmolcliError(
                f"the ONNX vision encoder gave {None if tile is None else tile.shape} embeddings where the model "
                f"expects {(described.n_tokens, n_embd)}; use {{vision_engine=mtmd}}"
            )
        tile = np.ascontiguousarray(tile, dtype=np.float32).reshape(-1)
        self.counters.images_encoded += 1
        if key is not None:
            self.options.embedding_cache.put(key, tile)
        return tile

    def _cached_embeddings(self, key: EmbeddingKey):
        stored = self.options.embedding_cache.get(key)
        if stored is None:
            self.counters.cache_misses += 1
            return None
        self.counters.cache_hits += 1
        return (ctypes.c_float * stored.size).from_buffer(stored)

    def _embedding_key(self, described: Chunk, mmproj_path=None) -> EmbeddingKey | None:
        cache = self.options.embedding_cache
        if cache is None or not described.image:
            return None
        if mmproj_path is not None:
            digest = cache.file_digest(mmproj_path)  # another vision context's chunk: mtmd's numbers
        else:
            if self._mmproj_digest is None:
                tag = self.options.vision_encoder.cache_tag if self.vision_outside_mtmd else None
                self._mmproj_digest = cache.encoder_digest(self.files.mmproj.path, tag)
            digest = self._mmproj_digest
        # mtmd_get_output_embd holds n_tokens rows of the language model's input width
        n_embd = int(self._llama.llama_model_n_embd_inp(self.model))
        return EmbeddingKey(described.image, digest, described.tile, described.n_tokens, n_embd)

    def utf8_vocabulary(self):
        """Every token's bytes, classified for the UTF-8 guard (computed on first use)."""
        if self._utf8_vocabulary is None:
            from smolcli.runtime.decoding.utf8_guard import Utf8Vocabulary

            self._utf8_vocabulary = Utf8Vocabulary([self.piece(token) for token in range(self.n_vocab)])
        return self._utf8_vocabulary

    # --- generation ----------------------------------------------------------------------

    def is_end(self, token: int) -> bool:
        return bool(self._llama.llama_vocab_is_eog(self.vocab, token))

    def piece(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        size = self._llama.llama_token_to_piece(self.vocab, token, buffer, 64, 0, False)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = self._llama.llama_token_to_piece(self.vocab, token, buffer, -size, 0, False)
        return buffer.raw[:size]

    def close(self) -> None:
        self._token_embeddings = None  # its map of the model file
        if self.mtmd_ctx:
            self._mtmd.mtmd_free(self.mtmd_ctx)
            self.mtmd_ctx = None
        for context in list(self._contexts):
            context.free()  # a context outliving its model would crash when freed
        if self.model:
            self._llama.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
