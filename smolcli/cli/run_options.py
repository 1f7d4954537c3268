"""Options that `ask` and `chat` share, declared once, and how they become an Engine and a sampler."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from smolcli.errors import SmolcliError
from smolcli.runtime.embedding_cache import EmbeddingCache
from smolcli.runtime.engine import EngineOptions
from smolcli.runtime.images import STDIN, RGBImage, load_image
from smolcli.runtime.model_files import ModelFiles, resolve_model_files
from smolcli.runtime.sampling import SamplingOptions


class CacheType(str, enum.Enum):
    f16 = "f16"
    q8_0 = "q8_0"
    q4_0 = "q4_0"


Model = Annotated[str, typer.Option("--model", "-m", help="Language-model GGUF (its mmproj-*.gguf beside it), a folder holding one converted pair, or a model name (smolcli models) or Hub repo id, pulled on first use.")]
Offline = Annotated[bool, typer.Option("--offline", help="Never touch the network: a model name must already be in the local store (also HF_HUB_OFFLINE=1).")]
Mmproj = Annotated[Optional[Path], typer.Option("--mmproj", help="The vision-encoder GGUF, when it is not beside the model.")]
Images = Annotated[Optional[list[str]], typer.Option("--image", "-i", help="Image file, or - for image bytes on stdin; repeat for several.")]
System = Annotated[Optional[str], typer.Option("--system", help="System prompt.")]
Temperature = Annotated[float, typer.Option("--temperature", help="0 (default): greedy, the same input gives the same answer.")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling (with --temperature > 0).")]
TopK = Annotated[int, typer.Option("--top-k", help="Sample among the k likeliest tokens, 0 for all (with --temperature > 0).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Seed for sampling (default: random).")]
MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens in an answer.")]
Stop = Annotated[Optional[list[str]], typer.Option("--stop", help="End the answer before this text; repeatable.")]
GpuLayers = Annotated[Optional[int], typer.Option("--n-gpu-layers", "-ngl", help="Layers to offload to the GPU; -1: all (default when llama.cpp was built with GPU support, else 0).")]
NoMmprojOffload = Annotated[bool, typer.Option("--no-mmproj-offload", help="Keep the vision encoder on the CPU.")]
Threads = Annotated[Optional[int], typer.Option("--threads", "-t", help="CPU threads (default: all cores).")]
Ctx = Annotated[Optional[int], typer.Option("--ctx", "-c", help="Context size in tokens (default: sized to the prompt, the images and --max-tokens).")]
Cache = Annotated[CacheType, typer.Option("--cache-type", help="KV-cache type; q8_0 and q4_0 save memory.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show llama.cpp's log on stderr.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Encode every image again instead of reusing stored embeddings (smolcli cache info).")]


def sampling_options(temperature: float, top_k: int, top_p: float, seed: Optional[int]) -> SamplingOptions:
    return SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)


def engine_options(
    n_gpu_layers: Optional[int], no_mmproj_offload: bool, threads: Optional[int], cache_type: CacheType, verbose: bool,
    no_cache: bool = False,
) -> EngineOptions:
    if n_gpu_layers is None:
        import llama_cpp

        n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    if threads is not None and threads < 1:
        raise SmolcliError(f"--threads must be at least 1, not {threads}")
    return EngineOptions(
        n_gpu_layers=n_gpu_layers, mmproj_offload=not no_mmproj_offload, threads=threads,
        cache_type=cache_type.value, verbose=verbose,
        embedding_cache=None if no_cache else EmbeddingCache.default(),
    )


def check_ctx(ctx: Optional[int]) -> None:
    if ctx is not None and ctx < 1:
        raise SmolcliError(f"--ctx must be a positive number of tokens, not {ctx}")


def load_images(sources: list[str]) -> list[RGBImage]:
    if sum(source == STDIN for source in sources) > 1:
        raise SmolcliError("stdin can carry one image only: give the other images as files")
    return [load_image(source) for source in sources]


def model_files(model: str, mmproj: Optional[Path], need_vision: bool, offline: bool = False) -> ModelFiles:
    """The one place that turns what the user typed after -m into files: a path, or a name pulled on first use."""
    from smolcli.cli.output import progress
    from smolcli.model_ref import parse_model_ref
    from smolcli.pull import stored_or_pulled
    from smolcli.store import ModelStore

    ref = parse_model_ref(model)
    if isinstance(ref, Path):
        return resolve_model_files(ref, mmproj, need_mmproj=need_vision)
    store = ModelStore()
    entry = stored_or_pulled(ref, offline, progress, store)
    return resolve_model_files(store.model_path(entry), mmproj or store.mmproj_path(entry), need_mmproj=need_vision)
