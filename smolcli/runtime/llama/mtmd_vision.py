"""mtmd, llama.cpp's own vision encoder: its contexts over a loaded model, its tokenizer (images cut into tiles
and text tokens, in chunks) and its encoder, whose image chunks it decodes into a context itself.

The VisionEncoder built into llama.cpp (runtime/vision/encoder.py); ONNX Runtime's is the other.
"""

from __future__ import annotations

import ctypes

import numpy as np

from smolcli.errors import ModelFileError, SmolcliError
from smolcli.runtime.gguf.gguf_file import GGUFSummary
from smolcli.runtime.llama.context import LlamaContext
from smolcli.runtime.llama.prompt import Chunk, Prompt
from smolcli.runtime.vision.embedding_cache import image_digest
from smolcli.runtime.vision.images import RGBImage


class MtmdVision:
    name = "mtmd"
    cache_tag = None  # keyed by the mmproj's own digest

    def __init__(self, llama_cpp, model, threads: int, use_gpu: bool):
        from llama_cpp import mtmd_cpp

        self._llama, self._mtmd = llama_cpp, mtmd_cpp
        self._model, self._threads, self._use_gpu = model, threads, use_gpu

    def engine_for(self, mmproj: GGUFSummary) -> str:
        return self.name

    def open(self, mmproj: GGUFSummary, purpose: str = ""):
        """An mtmd context over the model from this mmproj (free it with free())."""
        mtmd = self._mtmd
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = self._use_gpu
        params.n_threads = self._threads
        params.print_timings = False
        params.warmup = False
        handle = mtmd.mtmd_init_from_file(str(mmproj.path).encode(), self._model, params)
        if not handle:
            log = "" if purpose else "; rerun with {verbose} for its log"
            raise ModelFileError(f"{mmproj.path}: mtmd could not load this mmproj{purpose}{log}", path=mmproj.path)
        return handle

    def free(self, handle) -> None:
        self._mtmd.mtmd_free(handle)

    # --- prompts -------------------------------------------------------------------------

    def tokenize(self, mtmd_ctx, text: str, images: list[RGBImage], add_special: bool, keyed: bool) -> Prompt:
        """Text with mtmd's marker per image into mtmd's chunks; keyed: each image's chunks carry its digest
        (how a tile finds its embedding-cache entry)."""
        mtmd = self._mtmd
        encoded = text.encode("utf-8")
        bitmaps = [
            mtmd.mtmd_bitmap_init(
                img.width, img.height, (ctypes.c_uint8 * len(img.pixels)).from_buffer_copy(img.pixels)
            )
            for img in images
        ]
        copies: dict[str, int] = {}  # digest -> how many times that image is in the prompt
        if keyed:
            for img, bitmap in zip(images, bitmaps, strict=True):
                # mtmd copies a bitmap's id onto each of its chunks
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

    def marker(self) -> str:
        return self._mtmd.mtmd_default_marker().decode()

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

    # --- images --------------------------------------------------------------------------

    def encode(self, mtmd_ctx, chunk):
        """Run the encoder on one image chunk: its output embeddings (mtmd's buffer, valid until the next encode)."""
        if self._mtmd.mtmd_encode_chunk(mtmd_ctx, chunk) != 0:
            raise SmolcliError("the vision encoder failed on an image")
        return self._mtmd.mtmd_get_output_embd(mtmd_ctx)

    def encode_square(self, mtmd_ctx, square: RGBImage) -> np.ndarray:
        """float32 [n_tokens, n_embd] of one tile-size image, through a context whose longest edge is that tile
        (mmproj_variant.with_longest_edge): mtmd cuts it into a 1x1 grid and its global view, both the very same
        pixels (its resize of an image to its own size is a copy), and only the global view is encoded.

        The rows are copied out of mtmd's buffer (host memory, wherever the encoder ran), so they outlive the next
        encode."""
        prompt = self.tokenize(mtmd_ctx, self.marker(), [square], add_special=False, keyed=False)
        try:
            images = [i for i, chunk in enumerate(prompt.chunks) if chunk.kind == "image"]
            if len(images) != 2:
                raise SmolcliError(
                    f"mtmd cut a {square.width}x{square.height} tile into {len(images)} image chunks, where 2 "
                    "(tile, global view) were due"
                )
            n_tokens = prompt.chunks[images[-1]].n_tokens
            output = self.encode(mtmd_ctx, prompt.mtmd_chunk(images[-1]))
            n_embd = int(self._llama.llama_model_n_embd_inp(self._model))
            return np.ctypeslib.as_array(output, shape=(n_tokens * n_embd,)).reshape(n_tokens, n_embd).copy()
        finally:
            prompt.free()

    def decode(self, mtmd_ctx, context: LlamaContext, chunk, embeddings) -> None:
        """An image chunk's embeddings into the context's cache at its position, as mtmd lays them out."""
        mtmd = self._mtmd
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
