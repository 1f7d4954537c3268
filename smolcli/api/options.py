"""What `smolcli.load()` takes: the device, memory and detail settings the CLI has, typed and checked once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from smolcli.api.adapters import parse_lora
from smolcli.api.memory import MemoryLimit, parse_max_memory
from smolcli.api.vision_engine import check_vision_engine, check_vision_precision, vision_encoder_for
from smolcli.errors import BadInput
from smolcli.runtime.decoding.generation import GenerationLimits
from smolcli.runtime.decoding.grammar import Constraint, grammar_constraint, schema_constraint
from smolcli.runtime.decoding.sampling import SamplingOptions
from smolcli.runtime.llama.engine import EngineOptions
from smolcli.runtime.llama.prefix_cache import PrefixCache
from smolcli.runtime.llama.quant_types import KV_CACHE_TYPES
from smolcli.runtime.vision.embedding_cache import EmbeddingCache
from smolcli.util.threads import check_threads


def setting(default, doc: str):
    """A settings field: its default, and the line that documents it (help(smolcli.load), help(Model.ask))."""
    return field(default=default, metadata={"doc": doc})


Settings = TypeVar("Settings")


def settings_from(kind: type[Settings], keywords: dict, where: str) -> Settings:
    """`kind` (a settings dataclass) from keyword arguments; an unknown keyword is a one-line BadInput naming it
    and the valid ones."""
    names = [f.name for f in dataclasses.fields(kind)]
    for name in keywords:
        if name not in names:
            raise BadInput(f"{where} has no setting {name!r}; its settings are {', '.join(names)}")
    return kind(**keywords)


def settings_help(kind: type) -> str:
    """Each field of a settings dataclass as a docstring line: name, default, what it does."""
    lines = []
    for one in dataclasses.fields(kind):
        default = one.default if one.default is not dataclasses.MISSING else one.default_factory()
        lines.append(f"    {one.name} (default {default!r}): {one.metadata.get('doc', '')}")
    return "\n".join(lines)


@dataclass(frozen=True)
class GenerationSettings:
    """How an answer is generated: its length, its stop strings and its sampling (greedy unless temperature > 0)."""

    max_tokens: int = setting(256, "the most tokens in an answer")
    temperature: float = setting(0.0, "0: greedy, the same input gives the same answer; above 0: sampled")
    top_p: float = setting(0.95, "nucleus sampling (with temperature > 0)")
    top_k: int = setting(40, "sample among the k likeliest tokens, 0 for all (with temperature > 0)")
    seed: int | None = setting(None, "the sampling seed (None: random)")
    stop: tuple[str, ...] = setting((), "end the answer before any of these strings")
    ignore_eos: bool = setting(False, "generate exactly max_tokens tokens (benchmarks)")
    json_schema: dict | None = setting(None, "the answer is JSON that validates against this schema (answer.json)")
    grammar: str | None = setting(None, "or: the answer follows this GBNF grammar")

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))  # a list given is kept as the tuple it reads as

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

    mmproj: str | Path | None = setting(None, "the vision file, when it is not beside the model")
    n_gpu_layers: int | None = setting(
        None, "layers on the GPU; None: every layer when llama.cpp was built with GPU support, else 0"
    )
    mmproj_offload: bool = setting(True, "the vision encoder on the GPU too (when there is one)")
    threads: int | None = setting(None, "CPU threads; None: every core this process may use")
    ctx: int | None = setting(None, "context size in tokens; None: sized to each prompt, its images and max_tokens")
    cache_type: str | None = setting(
        None, "KV cache: f16, q8_0 or q4_0; None: f16, or with max_memory the largest that fits"
    )
    max_memory: str | int | None = setting(
        None, "'2G', '1.5GB', '800M', '512MiB' or bytes: plan each run's peak memory under it"
    )
    embedding_cache: bool = setting(
        True,
        "keep each image tile's encoder output, and an image prompt's prefilled prefix, on disk: skip both next time",
    )
    repack_weights: bool = setting(False, "llama.cpp's reordered second copy of the CPU weights: faster, more memory")
    image_size: int | None = setting(
        None, "resize each image's longest side to this before tiling (None: the model's own)"
    )
    max_tiles: int | None = setting(None, "or: the largest size that keeps every image of a question within N tiles")
    verbose: bool = setting(False, "llama.cpp's log on stderr")
    offline: bool = setting(False, "never touch the network: a model name must be in the local store")
    lora: tuple = setting(
        (), "LoRA adapter GGUFs applied at run time, stacked: 'a.gguf', 'a.gguf:0.5' or (path, scale)"
    )
    vision_engine: str = setting("auto", "auto, onnx or mtmd: which encoder turns images into embeddings")
    vision_precision: str = setting("auto", "the ONNX encoder's precision: auto, int8, bf16 (OpenVINO) or fp32 (exact)")

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
            prefix_cache=PrefixCache.default() if self.embedding_cache else None,
            repack_weights=self.repack_weights,
            lora=self.lora,
            # under max_memory the plan picks between them (api/memory.py): ONNX when it fits, else mtmd
            vision_encoder=vision_encoder_for(self.vision_engine, n_gpu_layers, self.threads, self.vision_precision),
        )
