"""What `smolcli.load()` takes: the device, memory and detail settings the CLI has, typed and checked once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smolcli.api.adapters import parse_lora
from smolcli.api.memory import MemoryLimit, parse_max_memory
from smolcli.api.vision_engine import check_vision_engine, check_vision_precision, vision_encoder_for
from smolcli.errors import BadInput
from smolcli.runtime.decoding.generation import GenerationLimits
from smolcli.runtime.decoding.grammar import Constraint, grammar_constraint, schema_constraint
from smolcli.runtime.decoding.sampling import SamplingOptions
from smolcli.runtime.llama.engine import EngineOptions
from smolcli.runtime.llama.quant_types import KV_CACHE_TYPES
from smolcli.runtime.vision.embedding_cache import EmbeddingCache
from smolcli.util.threads import check_threads


@dataclass(frozen=True)
class GenerationSettings:
    """How an answer is generated: its length, its stop strings and its sampling (greedy unless temperature > 0)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # exactly max_tokens tokens, for benchmarks
    json_schema: dict | None = None  # the answer is JSON that validates against this schema
    grammar: str | None = None  # or: the answer follows this GBNF grammar

    def limits(self) -> GenerationLimits:
        return GenerationLimits(self.max_tokens, tuple(self.stop), self.ignore_eos)

    def sampling(self) -> SamplingOptions:
        return SamplingOptions(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, seed=self.seed)

    def constraint(self) -> Constraint | None:
        """The grammar an answer must follow (checked before anything loads), or None."""
        if self.json_schema is not None and self.grammar is not None:
            raise BadInput("give {json_schema} or {grammar}, not both")
        if self.json_schema is not None:
            return schema_constraint(self.json_schema)
        if self.grammar is not None:
            return grammar_constraint(self.grammar)
        return None


@dataclass(frozen=True)
class LoadOptions:
    """Settings that hold for every question asked of one loaded model."""

    mmproj: str | Path | None = None  # the vision file, when it is not beside the model
    n_gpu_layers: int | None = None  # None: every layer on the GPU when llama.cpp was built with one, else 0
    mmproj_offload: bool = True  # the vision encoder on the GPU too (when there is one)
    threads: int | None = None  # None: every core this process may use
    ctx: int | None = None  # None: sized to each prompt, its images and max_tokens
    cache_type: str | None = None  # KV cache: f16, q8_0 or q4_0; None: f16, or with max_memory the largest that fits
    max_memory: str | int | None = None  # '2G', '1.5GB', '800M', '512MiB' or bytes: plan each run's peak under it
    embedding_cache: bool = True  # keep each image tile's encoder output on disk, to skip the encoder next time
    repack_weights: bool = False  # llama.cpp's reordered second copy of the CPU weights: faster, more memory
    image_size: int | None = None  # resize each image's longest side to this before tiling (the model's own: None)
    max_tiles: int | None = None  # or: the largest size that keeps every image of a question within N tiles
    verbose: bool = False  # llama.cpp's log on stderr
    offline: bool = False  # never touch the network: a model name must be in the local store
    # LoRA adapter GGUFs applied at run time, stacked: 'a.gguf', 'a.gguf:0.5' or (path, scale)
    lora: tuple = ()
    vision_engine: str = "auto"  # auto, onnx or mtmd: see api/vision_engine.py
    vision_precision: str = "auto"  # the ONNX encoder's: auto, int8, bf16 (refused) or fp32 (exact)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lora", parse_lora(self.lora))
        check_threads(self.threads)
        if self.ctx is not None and self.ctx < 1:
            raise BadInput(f"{{ctx}} must be a positive number of tokens, not {self.ctx}")
        if self.cache_type is not None and self.cache_type not in KV_CACHE_TYPES:
            raise BadInput(
                f"{{cache_type}} {self.cache_type!r} is not a KV-cache type; use {', '.join(KV_CACHE_TYPES)}"
            )
        if self.image_size is not None and self.max_tiles is not None:
            raise BadInput("give {image_size} or {max_tiles}, not both")
        check_vision_engine(self.vision_engine)
        check_vision_precision(self.vision_precision, self.vision_engine)
        parse_max_memory(self.max_memory)  # a typo fails before anything is pulled or loaded

    @property
    def memory_limit(self) -> MemoryLimit | None:
        return parse_max_memory(self.max_memory)

    def engine_options(self) -> EngineOptions:
        n_gpu_layers = self.n_gpu_layers
        if n_gpu_layers is None:
            import llama_cpp

            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        return EngineOptions(
            n_gpu_layers=n_gpu_layers,
            mmproj_offload=self.mmproj_offload,
            threads=self.threads,
            cache_type=self.cache_type or "f16",
            verbose=self.verbose,
            embedding_cache=EmbeddingCache.default() if self.embedding_cache else None,
            repack_weights=self.repack_weights,
            lora=self.lora,
            # under max_memory the plan picks between them (api/memory.py): ONNX when it fits, else mtmd
            vision_encoder=vision_encoder_for(self.vision_engine, n_gpu_layers, self.threads, self.vision_precision),
        )
