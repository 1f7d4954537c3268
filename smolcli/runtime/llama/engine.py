"""One loaded language model and its vision encoder: llama.cpp's model, its LoRA adapters and vocabulary, the
contexts made over it, and the mmproj in use (mtmd's context, or a LayoutEncoder outside llama.cpp).

Our own layer over llama-cpp-python's C bindings, so that the prompt, the image chunks and the cache stay under
our control: a new turn evaluates only what is new. The jobs live beside it: llama/context.py (a context: decode,
clear, rewind), llama/prompt.py and llama/own_layout.py (tokenized prompts), llama/mtmd_vision.py (mtmd),
llama/image_embeddings.py (a tile's embeddings, cached), llama/prefill.py (a prompt into a context).

On mtmd the images are laid out as on the ONNX path too: mtmd is handed our own tiles (llama/mtmd_tiles.py,
the engine's layout_encoder) through a context from the mmproj's tile-edge copy, so it resamples nothing.

With an ONNX vision encoder (options.vision_encoder) that takes the mmproj, no mtmd context is made: the
prompt's image layout is our own (models.smolvlm_image_layout, the grid from image_preprocess) and the tiles'
embeddings go into the cache through a llama_batch (embedding_batch), so the mmproj's weights are read only to
build the ONNX file, never held in memory beside it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from smolcli.errors import BadInput, ModelFileError, SmolcliError
from smolcli.models.smolvlm import IMAGE_MARKER
from smolcli.runtime.gguf.gguf_file import GGUFSummary, read_gguf
from smolcli.runtime.gguf.model_files import ModelFiles
from smolcli.runtime.gguf.token_embeddings import TokenEmbeddings, plain_lookup_refusal
from smolcli.runtime.llama.context import LlamaContext
from smolcli.runtime.llama.counters import Counters
from smolcli.runtime.llama.image_embeddings import ImageEmbeddings
from smolcli.runtime.llama.mtmd_tiles import MtmdTiles
from smolcli.runtime.llama.mtmd_vision import MtmdVision
from smolcli.runtime.llama.own_layout import own_layout_prompt
from smolcli.runtime.llama.prefill import Prefill
from smolcli.runtime.llama.prefix_cache import PrefixCache, PrefixReuse
from smolcli.runtime.llama.prompt import Chunk, Prompt
from smolcli.runtime.llama.quant_types import KV_CACHE_TYPES as CACHE_TYPES  # name -> GGML type
from smolcli.runtime.vision.embedding_cache import EmbeddingCache
from smolcli.runtime.vision.encoder import LayoutEncoder
from smolcli.runtime.vision.image_tiles import PREPROC_KEY, fit_for_tiling, tile_size_of
from smolcli.runtime.vision.images import RGBImage
from smolcli.runtime.vision.mmproj_variant import with_longest_edge
from smolcli.util.threads import usable_cores

__all__ = ["Chunk", "Counters", "Engine", "EngineOptions", "Prompt", "default_threads"]


@dataclass
class EngineOptions:
    n_gpu_layers: int = 0
    mmproj_offload: bool = True
    threads: int | None = None
    cache_type: str = "f16"  # the KV cache of a context made without one
    n_batch: int = 2048
    n_ubatch: int = 512  # rows per llama.cpp compute graph: benchmarks/prefill_sweep.py
    # llama.cpp's CPU_REPACK: a second, reordered copy of the CPU weights for its faster matrix kernels
    repack_weights: bool = False
    verbose: bool = False
    embedding_cache: EmbeddingCache | None = None  # None: every image tile goes through the encoder
    prefix_cache: PrefixCache | None = None  # None: an image prompt's shared prefix is prefilled on every question
    lora: tuple[tuple[str, float], ...] = ()  # LoRA adapter GGUFs and their scales, stacked on every context
    # image tiles encoded outside llama.cpp (ONNX Runtime's OnnxVisionEncoder): mtmd only where it refuses
    vision_encoder: LayoutEncoder | None = None
    # mtmd handed our own tiles (MtmdTiles: transformers' resizes); False: mtmd cuts whole images with its own
    # resampler, as before (benchmarks compare the two)
    mtmd_own_tiles: bool = True
    # None: on for a quantized V cache (it needs it), else llama.cpp's choice (on, on the CPU). Off is exact over long
    # caches (CPU flash attention moves the logits when a few tokens attend over many: benchmarks/flash_attention_logits.py)
    # but costs memory: 2.2B's compute buffer at n_ctx 8192 is 556 MiB instead of 104 (llama.cpp's log), and 15% of prefill
    flash_attention: bool | None = None
    # our own layout's prompts as one run of embedding rows (text as token_embd's rows): None when they hold
    # images, True for every prompt, False never (one decode per text run and per tile; tests and benchmarks)
    prefill_as_rows: bool | None = None


def default_threads() -> int:
    return usable_cores()


class Engine:
    def __init__(self, files: ModelFiles, options: EngineOptions):
        import llama_cpp

        from smolcli.runtime.llama import llama_logging

        self._llama = llama_cpp
        self.files = files
        self.options = options
        self.counters = Counters()
        self._contexts: list[LlamaContext] = []  # every context made and not yet freed: freed before the model
        self.mtmd_ctx = None  # mtmd's context for the engine's mmproj (None: no mmproj, or the images go outside)
        self.vision_outside_mtmd = False  # the mmproj's images go through options.vision_encoder, no mtmd context
        # whose tile layout the images follow: options.vision_encoder outside mtmd, mtmd on our own tiles
        # (MtmdTiles), or None where mtmd cuts whole images itself (an mmproj without a longest edge)
        self.layout_encoder: LayoutEncoder | None = None
        self._utf8_vocabulary = None
        # piece()'s answers: a token's bytes never change, and decoding asks for one per token
        self._pieces: dict[int, bytes] = {}
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
        self.n_embd = int(llama_cpp.llama_model_n_embd_inp(self.model))  # the width of an input row
        use_gpu = options.mmproj_offload and options.n_gpu_layers != 0
        self.mtmd = MtmdVision(llama_cpp, self.model, self.threads, use_gpu)
        self.images = ImageEmbeddings(self)
        self.prefill = Prefill(self, self.images)
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

    @property
    def vision_engine(self) -> str:
        """Which encoder made the last image's embeddings."""
        return self.images.last_engine

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
        if self.mtmd_ctx is not None:
            self.mtmd.free(self.mtmd_ctx)
            self.mtmd_ctx = None
        self.vision_outside_mtmd = outside
        self.layout_encoder = encoder if outside else None
        if not outside:
            self.mtmd_ctx, self.layout_encoder = self._open_mtmd(mmproj)
        self.files = dataclasses.replace(self.files, mmproj=mmproj)
        self.images.forget_digest()
        self.load_seconds += time.perf_counter() - started

    def _open_mtmd(self, mmproj: GGUFSummary) -> tuple[object, MtmdTiles | None]:
        """mtmd's context for this mmproj, and the encoder that hands it our own tiles (transformers' resizes):
        the context is opened from the mmproj's copy whose longest edge is one tile, so mtmd resamples nothing.
        An mmproj without a longest edge (an old conversion), or a copy that cannot be written: mtmd's own
        context on whole images (its resampler, about 1e-2 off transformers on upscaled images)."""
        if not self.options.mtmd_own_tiles or mmproj.metadata.get(PREPROC_KEY) is None:
            return self.mtmd.open(mmproj), None
        try:
            tiles = with_longest_edge(mmproj, tile_size_of(mmproj).tile)
        except SmolcliError as error:
            print(
                f"smolcli: {error}; mtmd resizes the images itself instead (less close to transformers)",
                file=sys.stderr,
            )
            return self.mtmd.open(mmproj), None
        try:
            handle = self.mtmd.open(tiles)
        except ModelFileError:
            raise ModelFileError(
                f"{mmproj.path}: mtmd could not load this mmproj; rerun with {{verbose}} for its log", path=mmproj.path
            ) from None
        return handle, MtmdTiles(self.mtmd, handle)

    def open_vision_context(self, mmproj: GGUFSummary, purpose: str = " for video frames"):
        """Another mtmd context over this model from this mmproj (free it with free_vision_context)."""
        return self.mtmd.open(mmproj, purpose)

    def free_vision_context(self, handle) -> None:
        self.mtmd.free(handle)

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

    # --- contexts ------------------------------------------------------------------------

    @property
    def n_ctx_train(self) -> int:
        return int(self._llama.llama_model_n_ctx_train(self.model))

    def new_context(
        self, n_ctx: int, cache_type: str | None = None, n_seq: int = 1, n_batch: int | None = None
    ) -> LlamaContext:
        """A context of its own for a conversation: n_ctx positions of a `cache_type` KV cache (the options' by
        default), with the model's LoRA adapters set. The caller owns it (free() it); the engine frees what
        is left when it closes, before the weights. n_seq > 1: that many sequences sharing the n_ctx cells (a
        BatchDecoder's). n_batch: the most tokens one decode takes (default the options'); a context that only ever
        decodes a few at a time asks for few, and llama.cpp's compute buffer shrinks with it."""
        llama_cpp = self._llama
        cache_type = cache_type or self.options.cache_type
        cache = CACHE_TYPES[cache_type]
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = min(n_batch or self.options.n_batch, n_ctx)
        params.n_ubatch = min(self.options.n_ubatch, params.n_batch)
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.type_k = cache
        params.type_v = cache
        params.flash_attn_type = self.flash_attention_type(cache_type)
        params.n_seq_max = n_seq
        params.kv_unified = n_seq > 1  # one pool of cells: each sequence takes what it needs, not n_ctx / n_seq
        handle = llama_cpp.llama_init_from_model(self.model, params)
        if not handle:
            # the usual cause for a quantized cache: the model's head size is not a multiple of the block size
            fix = "try {cache_type=f16}" if cache != 1 else "lower {ctx} or free memory"
            raise SmolcliError(
                f"llama.cpp could not create a {n_ctx}-token context with a {cache_type} KV cache; "
                f"{fix} (rerun with {{verbose}} for its log)"
            )
        context = LlamaContext(llama_cpp, handle, int(params.n_batch), cache_type, self.n_vocab, self.counters, n_seq)
        self._contexts = [made for made in self._contexts if not made.freed] + [context]
        try:
            self._set_adapters(context)
        except BaseException:
            context.free()
            raise
        return context

    def flash_attention_type(self, cache_type: str) -> int:
        """llama.cpp's flash-attention setting for a context of this KV-cache type."""
        llama_cpp = self._llama
        cache = CACHE_TYPES[cache_type]
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
        mtmd_ctx = vision_ctx or self.mtmd_ctx
        if text.count(IMAGE_MARKER) != len(images):
            raise BadInput(f"the prompt has {text.count(IMAGE_MARKER)} {IMAGE_MARKER} markers for {len(images)} images")
        if images and mtmd_ctx is None and not self.vision_outside_mtmd:
            raise ModelFileError("images need the vision encoder: pass the mmproj file with {mmproj}")
        mmproj = self.files.mmproj
        images = [img if mmproj is None else fit_for_tiling(mmproj, img) for img in images]
        if vision_ctx is None and (mtmd_ctx is None or self.layout_encoder is not None):
            # text alone, or images on our own layout (the ONNX encoder, or mtmd on our tiles)
            return own_layout_prompt(text, images, add_special, self.layout_encoder, mmproj, self.text_tokens)
        text = text.replace(IMAGE_MARKER, self.mtmd.marker())
        return self.mtmd.tokenize(mtmd_ctx, text, images, add_special, self.options.embedding_cache is not None)

    def text_tokens(self, encoded: bytes, add_special: bool) -> tuple[int, list[int]]:
        llama_cpp = self._llama
        capacity = len(encoded) + 8
        buffer = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self.vocab, encoded, len(encoded), buffer, capacity, add_special, True)
        if count < 0:
            raise SmolcliError("the prompt could not be tokenized")
        return count, list(buffer[:count])

    def evaluate(
        self, prompt: Prompt, context: LlamaContext, reuse_prefix: bool = False, store_prefix: bool = True
    ) -> None:
        """Run every chunk of the prompt through the model, appending to the context's cache (llama/prefill.py).
        reuse_prefix: a question's whole prompt into an empty context, its shared prefix first (its state restored
        from the prefix cache, or stored there unless store_prefix is False) where that is exact
        (llama/prefix_cache.py)."""
        if reuse_prefix:
            reuse = PrefixReuse(self, self.options.prefix_cache, store=store_prefix)
            if reuse.applies(prompt, context):
                reuse.evaluate(prompt, context)
                return
        self.prefill.evaluate(prompt, context)

    @property
    def runtime_version(self) -> str:
        """llama-cpp-python's version (its llama.cpp's state format)."""
        return str(getattr(self._llama, "__version__", "unknown"))

    def token_embeddings(self) -> TokenEmbeddings | None:
        """The model's token_embd rows, where feeding them equals feeding the tokens (else None)."""
        if self._token_embeddings is None:
            adapters = [read_gguf(Path(path)) for path, _ in self.options.lora]  # headers only
            refusal = plain_lookup_refusal(self.files.model, self.n_embd, self.n_vocab, adapters)
            self._token_embeddings = TokenEmbeddings(self.files.model) if refusal is None else False
        return self._token_embeddings or None

    # --- the vocabulary ------------------------------------------------------------------

    def utf8_vocabulary(self):
        """Every token's bytes, classified for the UTF-8 guard (computed on first use)."""
        if self._utf8_vocabulary is None:
            from smolcli.runtime.decoding.utf8_guard import Utf8Vocabulary

            self._utf8_vocabulary = Utf8Vocabulary([self.piece(token) for token in range(self.n_vocab)])
        return self._utf8_vocabulary

    def is_end(self, token: int) -> bool:
        return bool(self._llama.llama_vocab_is_eog(self.vocab, token))

    def piece(self, token: int) -> bytes:
        known = self._pieces.get(token)
        if known is not None:
            return known
        buffer = ctypes.create_string_buffer(64)
        size = self._llama.llama_token_to_piece(self.vocab, token, buffer, 64, 0, False)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = self._llama.llama_token_to_piece(self.vocab, token, buffer, -size, 0, False)
        piece = self._pieces[token] = buffer.raw[:size]
        return piece

    def close(self) -> None:
        self._token_embeddings = None  # its map of the model file
        if self.mtmd_ctx:
            self.mtmd.free(self.mtmd_ctx)
            self.mtmd_ctx = None
            self.layout_encoder = None
        for context in list(self._contexts):
            context.free()  # a context outliving its model would crash when freed
        if self.model:
            self._llama.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
