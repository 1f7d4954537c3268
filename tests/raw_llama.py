"""References made with raw llama.cpp + mtmd calls through llama-cpp-python, never through smolcli's Engine."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

CTX = 1024


class RawMtmd:
    """A model, a context and an mtmd context, greedy decoding by argmax; images read by mtmd's own decoder."""

    def __init__(self, model: Path, mmproj: Path):
        import llama_cpp
        from llama_cpp import mtmd_cpp

        self.llama, self.mtmd = llama_cpp, mtmd_cpp
        llama_cpp.llama_backend_init()
        self.model = llama_cpp.llama_model_load_from_file(str(model).encode(), llama_cpp.llama_model_default_params())
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = CTX
        params.n_threads = params.n_threads_batch = 1
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        mparams = mtmd_cpp.mtmd_context_params_default()
        mparams.use_gpu, mparams.print_timings, mparams.n_threads = False, False, 1
        self.mctx = mtmd_cpp.mtmd_init_from_file(str(mmproj).encode(), self.model, mparams)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def eval_prompt(self, prompt: str, image_paths: list[Path]) -> None:
        """A prompt with mtmd's media marker where each image goes, evaluated from position 0."""
        mtmd = self.mtmd
        bitmaps = [mtmd.mtmd_helper_bitmap_init_from_file(self.mctx, str(p).encode(), False) for p in image_paths]
        chunks = mtmd.mtmd_input_chunks_init()
        text = prompt.encode()
        inp = mtmd.mtmd_input_text(text, len(text), False, True)
        array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
        assert mtmd.mtmd_tokenize(self.mctx, chunks, ctypes.byref(inp), array, len(bitmaps)) == 0
        n_past = self.llama.llama_pos(0)
        assert mtmd.mtmd_helper_eval_chunks(self.mctx, self.ctx, chunks, 0, 0, CTX, True, ctypes.byref(n_past)) == 0
        for bitmap in bitmaps:
            mtmd.mtmd_bitmap_free(bitmap)
        mtmd.mtmd_input_chunks_free(chunks)

    def eval_text(self, text: str) -> None:
        """Text appended after what is already evaluated (special tokens parsed)."""
        encoded = text.encode()
        buffer = (self.llama.llama_token * 256)()
        count = self.llama.llama_tokenize(self.vocab, encoded, len(encoded), buffer, 256, False, True)
        self._decode(list(buffer[:count]))

    def greedy(self, n_tokens: int) -> str:
        llama_cpp = self.llama
        pieces = b""
        for _ in range(n_tokens):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
            token = int(np.argmax(logits))
            buffer = ctypes.create_string_buffer(256)
            size = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, 256, 0, False)
            pieces += buffer.raw[:size]
            self._decode([token])
        return pieces.decode("utf-8", errors="replace")

    def _decode(self, tokens: list[int]) -> None:
        array = (self.llama.llama_token * len(tokens))(*tokens)
        assert self.llama.llama_decode(self.ctx, self.llama.llama_batch_get_one(array, len(tokens))) == 0

    def close(self) -> None:
        self.mtmd.mtmd_free(self.mctx)
        self.llama.llama_free(self.ctx)
        self.llama.llama_model_free(self.model)

    def __enter__(self) -> "RawMtmd":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
