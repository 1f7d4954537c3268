"""llama.cpp's KV state after an image prompt's shared prefix, kept on disk: a later question about the same
images, in a new process, restores it and prefills only its own tokens.

The prefix is everything up to the text after the last image (the template, the system prompt, the image
tokens); the question's own words and the assistant's turn follow it. An entry's key holds all that makes
those KV values: the model file's content, the vision encoder (its file and cache tag: form and precision),
the prefix's chunks (text tokens, each tile's image digest and index), the KV-cache type, flash attention,
the way the prefix went in (as rows or per chunk, and the batch size where it split the prefix), the threads,
repacked weights and llama-cpp-python's version (its state format). The context's size is not in it: llama.cpp's sequence
state holds cells and positions, and loads into any context with room for them.

Both halves of a prompt go in the same way on a miss, on a hit and with the cache off (the prefix evaluated
alone, then the rest), so a hit answers bit for bit as the run that stored it and as a run without the cache.

Only where that holds and was measured: the CPU (no layers on a GPU), our own layout (the ONNX encoder's
prompts; mtmd's chunks are mtmd's to decode), no LoRA adapters; elsewhere the prompt goes in whole as before.
The entries live in an LruFolder (util/lru_folder.py): atomic writes, least-recently-used eviction under
SMOLCLI_PREFIX_CACHE_MAX_BYTES, a damaged entry a miss that is removed and written again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from smolcli.runtime.gguf.file_identity import content_digest
from smolcli.runtime.llama.context import LlamaContext
from smolcli.runtime.llama.prompt import Chunk, Prompt
from smolcli.util.lru_folder import LruStore, max_bytes_from_env
from smolcli.util.user_cache import cache_dir

if TYPE_CHECKING:
    from smolcli.runtime.llama.engine import Engine

MAX_BYTES_ENV = "SMOLCLI_PREFIX_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 2 << 30  # 256M's state for a 13-tile photo is 20 MB, 2.2B's about 0.3 GB
# an entry `<key digest>.kv`: this header (magic, format version, the prefix's tokens, the state's bytes, crc32 of
# the state), then llama.cpp's state of sequence 0
HEADER, MAGIC, FORMAT_VERSION, SUFFIX = struct.Struct("<4sIIQI"), b"SMPC", 1, ".kv"


@dataclass(frozen=True)
class PrefixKey:
    """What makes a prefix's KV values: two prompts with equal keys leave equal states."""

    model: str  # the model file's content digest
    encoder: str  # the vision file's digest and the encoder's cache tag
    chunks: tuple  # ("text", tokens...) or ("image", image digest, tile, n_tokens), in order
    n_tokens: int
    cache_type: str
    flash_attention: int
    as_rows: bool
    split_batch: int  # n_batch where it cut the prefix into several decodes, else 0
    threads: int
    repacked: bool  # llama.cpp's reordered CPU weights (--repack-weights): other kernels
    runtime: str  # llama-cpp-python's version: its state format

    def file_name(self) -> str:
        text = repr((FORMAT_VERSION, *dataclasses.astuple(self)))
        return hashlib.blake2b(text.encode(), digest_size=20).hexdigest() + SUFFIX


class PrefixCache(LruStore):
    """The stored prefix states, under a size bound (least recently used dropped first)."""

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES):
        super().__init__(folder, SUFFIX, max_bytes)

    @classmethod
    def default(cls) -> "PrefixCache":
        return cls(cache_dir() / "prefixes", max_bytes_from_env(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))

    def file_digest(self, path: Path) -> str:
        """A model or vision file's content digest, hashed once per version of the file."""
        return content_digest(path, self.folder / "file-digests")

    def get(self, key: PrefixKey) -> memoryview | None:
        """The stored state (writable), or None; a damaged entry is None and removed."""
        return self.entries.read(key.file_name(), lambda data: _parse(data, key))

    def put(self, key: PrefixKey, state: memoryview) -> bool:
        """Store a state; False when it was not (larger than the bound, a full disk: the next run prefills)."""
        header = HEADER.pack(MAGIC, FORMAT_VERSION, key.n_tokens, state.nbytes, zlib.crc32(state))
        return self.entries.write(key.file_name(), header, state)

    def forget(self, key: PrefixKey) -> None:
        """Drop an entry llama.cpp refused (it is written again after the prompt is evaluated)."""
        self.entries.remove(key.file_name())


def _parse(data: bytearray, key: PrefixKey) -> memoryview | None:
    """The state within an entry's bytes (a view: a 2.2B state is hundreds of MB), or None when damaged."""
    if len(data) < HEADER.size:
        return None
    magic, version, n_tokens, size, crc = HEADER.unpack_from(data)
    if (magic, version, n_tokens) != (MAGIC, FORMAT_VERSION, key.n_tokens) or len(data) != HEADER.size + size:
        return None
    state = memoryview(data)[HEADER.size :]
    return state if zlib.crc32(state) == crc else None


def shared_prefix_end(prompt: Prompt) -> int:
    """How many of the prompt's chunks make its shared prefix: up to and with the last image chunk (0: no image,
    or nothing after it to prefill)."""
    images = [index for index, chunk in enumerate(prompt.chunks) if chunk.kind == "image"]
    if not images or images[-1] + 1 >= len(prompt.chunks):
        return 0
    return images[-1] + 1


class PrefixReuse:
    """An own-layout image prompt into an empty context in two parts: its prefix's state restored from the cache
    when stored there, else evaluated (and stored); then the prompt's own chunks.

    Without a cache the prompt still goes in in the same two parts: the question's own tokens are then a batch
    of their own whether the prefix was restored or not, so a run with the cache, a run that restores from it
    and a run without it give the same logits bit for bit. (Under CPU flash attention a few tokens attending
    over many round differently from a large batch; a prompt evaluated whole moved the logits by about 1e-3.)"""

    def __init__(self, engine: "Engine", cache: PrefixCache | None, store: bool = True):
        self.engine = engine
        self.cache = cache if cache is not None and cache.max_bytes > 0 else None  # bounded to nothing: off
        # False: a stored state is still restored, but a missing one is not written (a batch item whose images no
        # later item shares: its state would be written for nothing)
        self.store = store

    def applies(self, prompt: Prompt, context: LlamaContext) -> bool:
        """Where a restored prefix answers as the run that stored it (see the module's header)."""
        engine = self.engine
        options = engine.options
        return (
            prompt.handle is None
            and engine.vision_outside_mtmd
            and options.n_gpu_layers == 0
            and not options.lora
            and context.n_past == 0
            and shared_prefix_end(prompt) > 0
        )

    def evaluate(self, prompt: Prompt, context: LlamaContext) -> None:
        engine = self.engine
        context.check_fits(prompt.n_tokens)
        at = shared_prefix_end(prompt)
        prefix, rest = prompt.chunks[:at], prompt.chunks[at:]
        as_rows = engine.prefill.as_rows(prompt)
        cache = self.cache
        started = time.perf_counter()
        key = self.key(prefix, context, as_rows) if cache is not None else None
        state = cache.get(key) if cache is not None else None
        # reading the cache is the images' encode time, as the embedding cache's reads are; loading it, prefill
        engine.counters.encode_seconds += time.perf_counter() - started
        if state is not None and context.restore_state(state, key.n_tokens):
            engine.counters.prefix_tokens_restored += key.n_tokens
            engine.images.last_engine = engine.options.vision_encoder.name  # the encoder that made the stored tiles
        else:
            if state is not None:
                cache.forget(key)  # refused by llama.cpp: stored again below
            engine.prefill.evaluate_chunks(context, prefix, as_rows)
            if cache is not None and self.store:
                cache.put(key, context.sequence_state())
        engine.prefill.evaluate_chunks(context, rest, as_rows)

    def key(self, prefix: list[Chunk], context: LlamaContext, as_rows: bool) -> PrefixKey:
        engine = self.engine
        encoder = engine.options.vision_encoder
        n_tokens = sum(chunk.n_tokens for chunk in prefix)
        return PrefixKey(
            model=self.cache.file_digest(engine.files.model.path),
            encoder=f"{self.cache.file_digest(engine.files.mmproj.path)}-{encoder.cache_tag}",
            chunks=tuple(_described(chunk) for chunk in prefix),
            n_tokens=n_tokens,
            cache_type=context.cache_type,
            flash_attention=int(engine.flash_attention_type(context.cache_type)),
            as_rows=as_rows,
            split_batch=context.n_batch if context.n_batch < n_tokens else 0,
            threads=engine.threads,
            repacked=engine.options.repack_weights,
            runtime=engine.runtime_version,
        )


def _described(chunk: Chunk) -> tuple:
    if chunk.kind == "text":
        return ("text", *chunk.tokens)
    return ("image", chunk.image, chunk.tile, chunk.n_tokens)
