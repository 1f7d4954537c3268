"""Options that `ask` and `chat` share, declared once, and how they become an Engine and a sampler."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from smolcli.errors import SmolcliError
from smolcli.runtime.embedding_cache import EmbeddingCache
from smolcli.runtime.engine import EngineOptions
from smolcli.runtime.image_tiles import edge_for_image_size, edge_for_max_tiles, tile_size_of
from smolcli.runtime.images import STDIN, RGBImage, load_image
from smolcli.runtime.mmproj_variant import with_longest_edge
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
Cache = Annotated[Optional[CacheType], typer.Option("--cache-type", help="KV-cache type; q8_0 and q4_0 save memory (default: f16, or with --max-memory the largest that fits).")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show llama.cpp's log on stderr.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Encode every image again instead of reusing stored embeddings (smolcli cache info).")]
MaxMemory = Annotated[Optional[str], typer.Option("--max-memory", metavar="SIZE", help="Plan the run's peak memory (CPU and GPU together) before loading and stay under SIZE: picks the largest KV-cache type that fits, or stops and says what each part needs. SIZE: 2G, 1.5GB, 800M (powers of 1000), 512MiB (powers of 1024) or plain bytes.")]
RepackWeights = Annotated[bool, typer.Option("--repack-weights", help="Keep a second, reordered copy of the CPU weights for llama.cpp's faster matrix kernels: a few percent faster, up to the model's size in extra memory (0.7 GB for 2.2B Q4_K_M).")]
ImageSize = Annotated[Optional[int], typer.Option("--image-size", metavar="PX", help="Resize each image's longest side to PX before cutting it into tiles (rounded up to whole tiles; the model's own: 2048 for 256M/500M, 1536 for 2.2B). Smaller: fewer tiles, faster, less fine detail.")]
MaxTiles = Annotated[Optional[int], typer.Option("--max-tiles", metavar="N", help="Cut each image into at most N tiles (plus its global view), by choosing the largest --image-size that allows it.")]


def sampling_options(temperature: float, top_k: int, top_p: float, seed: Optional[int]) -> SamplingOptions:
    return SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)


def engine_options(
    n_gpu_layers: Optional[int], no_mmproj_offload: bool, threads: Optional[int], cache_type: Optional[CacheType], verbose: bool,
    no_cache: bool = False, repack_weights: bool = False,
) -> EngineOptions:
    if n_gpu_layers is None:
        import llama_cpp

        n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    if threads is not None and threads < 1:
        raise SmolcliError(f"--threads must be at least 1, not {threads}")
    return EngineOptions(
        n_gpu_layers=n_gpu_layers, mmproj_offload=not no_mmproj_offload, threads=threads,
        cache_type=cache_type.value if cache_type else CacheType.f16.value, verbose=verbose,
        embedding_cache=None if no_cache else EmbeddingCache.default(), repack_weights=repack_weights,
    )


def check_ctx(ctx: Optional[int]) -> None:
    if ctx is not None and ctx < 1:
        raise SmolcliError(f"--ctx must be a positive number of tokens, not {ctx}")


def with_image_detail(
    files: ModelFiles, images: list[RGBImage], image_size: Optional[int], max_tiles: Optional[int] = None
) -> ModelFiles:
    """The model files with an mmproj that tiles images as --image-size or --max-tiles ask."""
    if image_size is not None and max_tiles is not None:
        raise SmolcliError("give --image-size or --max-tiles, not both")
    if files.mmproj is None or (image_size is None and max_tiles is None):
        return files
    size = tile_size_of(files.mmproj)
    if image_size is not None:
        edge = edge_for_image_size(image_size, size)
    else:
        edge = edge_for_max_tiles([(img.width, img.height) for img in images], max_tiles, size)
    return dataclasses.replace(files, mmproj=with_longest_edge(files.mmproj, edge))


def load_images(sources: list[str]) -> list[RGBImage]:
    if sum(source == STDIN for source in sources) > 1:
        raise SmolcliError("stdin can carry one image only: give the other images as files")
    return [load_image(source) for source in sources]


def model_files(model: str, mmproj: Optional[Path], need_vision: bool, offline: bool = False) -> ModelFiles:
    """The one place that turns what the user typed after -m into files: a path, or a name pulled on first use."""
    from smolcli.cli.output import progress
    from smolcli.store.model_ref import parse_model_ref
    from smolcli.store.pull import stored_or_pulled
    from smolcli.store.model_store import ModelStore

    ref = parse_model_ref(model)
    if isinstance(ref, Path):
        return resolve_model_files(ref, mmproj, need_mmproj=need_vision)
    store = ModelStore()
    entry = stored_or_pulled(ref, offline, progress, store)
    return resolve_model_files(store.model_path(entry), mmproj or store.mmproj_path(entry), need_mmproj=need_vision)
