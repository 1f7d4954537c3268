"""Options that `ask` and `chat` share, declared once, and how they become the library's settings."""

from __future__ import annotations

import enum
import functools
import inspect
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from smolcli.api.options import GenerationSettings, LoadOptions
from smolcli.errors import SmolcliError
from smolcli.runtime.decoding.grammar import read_grammar, read_schema
from smolcli.runtime.llama.quant_types import KV_CACHE_TYPES
from smolcli.runtime.vision.images import STDIN, RGBImage, load_image

# the KV-cache types llama.cpp takes, from the runtime's one table, as Typer's choices
CacheType = enum.Enum("CacheType", {name: name for name in KV_CACHE_TYPES}, type=str)


Model = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Language-model GGUF (its mmproj-*.gguf beside it), a folder holding one converted pair, or a model name (smolcli models) or Hub repo id, pulled on first use.",
    ),
]
Offline = Annotated[
    bool,
    typer.Option(
        "--offline",
        help="Never touch the network: a model name must already be in the local store (also HF_HUB_OFFLINE=1).",
    ),
]
Mmproj = Annotated[
    Optional[Path], typer.Option("--mmproj", help="The vision-encoder GGUF, when it is not beside the model.")
]
Images = Annotated[
    Optional[list[str]],
    typer.Option("--image", "-i", help="Image file, or - for image bytes on stdin; repeat for several."),
]
System = Annotated[Optional[str], typer.Option("--system", help="System prompt.")]
# how a video clip's frames are sampled: ask --video, chat's /video, serve's video_url parts
Fps = Annotated[
    Optional[float], typer.Option("--fps", help="Video frames sampled per second (default: the release's, 1).")
]
MaxFrames = Annotated[
    Optional[int], typer.Option("--max-frames", help="At most this many frames of a clip (default: the release's, 64).")
]
Temperature = Annotated[
    float, typer.Option("--temperature", help="0 (default): greedy, the same input gives the same answer.")
]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling (with --temperature > 0).")]
TopK = Annotated[
    int, typer.Option("--top-k", help="Sample among the k likeliest tokens, 0 for all (with --temperature > 0).")
]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Seed for sampling (default: random).")]
MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens in an answer.")]
Stop = Annotated[Optional[list[str]], typer.Option("--stop", help="End the answer before this text; repeatable.")]
GpuLayers = Annotated[
    Optional[int],
    typer.Option(
        "--n-gpu-layers",
        "-ngl",
        help="Layers to offload to the GPU; -1: all (default when llama.cpp was built with GPU support, else 0).",
    ),
]
VisionEngine = Annotated[
    str,
    typer.Option(
        "--vision-engine",
        help="Image encoder: onnx (ONNX Runtime int8, CPU), mtmd (llama.cpp) or auto (onnx when every layer is on the CPU).",
    ),
]
VisionPrecision = Annotated[
    str,
    typer.Option(
        "--vision-precision",
        help="The ONNX image encoder's arithmetic: int8, fp32 (exact, slower) or auto (int8, fp32 where int8 fails its self-check).",
    ),
]
NoMmprojOffload = Annotated[bool, typer.Option("--no-mmproj-offload", help="Keep the vision encoder on the CPU.")]
Threads = Annotated[Optional[int], typer.Option("--threads", "-t", help="CPU threads (default: all cores).")]
Ctx = Annotated[
    Optional[int],
    typer.Option(
        "--ctx", "-c", help="Context size in tokens (default: sized to the prompt, the images and --max-tokens)."
    ),
]
Cache = Annotated[
    Optional[CacheType],
    typer.Option(
        "--cache-type",
        help="KV-cache type; q8_0 and q4_0 save memory (default: f16, or with --max-memory the largest that fits).",
    ),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show llama.cpp's log on stderr.")]
NoCache = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Encode and prefill every image again instead of reusing stored embeddings and prefix states (smolcli cache info).",
    ),
]
MaxMemory = Annotated[
    Optional[str],
    typer.Option(
        "--max-memory",
        metavar="SIZE",
        help="Plan the run's peak memory (CPU and GPU together) before loading and stay under SIZE: picks the largest KV-cache type that fits, or stops and says what each part needs. SIZE: 2G, 1.5GB, 800M (powers of 1000), 512MiB (powers of 1024) or plain bytes.",
    ),
]
RepackWeights = Annotated[
    bool,
    typer.Option(
        "--repack-weights",
        help="Keep a second, reordered copy of the CPU weights for llama.cpp's faster matrix kernels: a few percent faster, up to the model's size in extra memory (0.7 GB for 2.2B Q4_K_M).",
    ),
]
ImageSize = Annotated[
    Optional[int],
    typer.Option(
        "--image-size",
        metavar="PX",
        help="Resize each image's longest side to PX before cutting it into tiles (rounded up to whole tiles; the model's own: 2048 for 256M/500M, 1536 for 2.2B). Smaller: fewer tiles, faster, less fine detail.",
    ),
]
MaxTiles = Annotated[
    Optional[int],
    typer.Option(
        "--max-tiles",
        metavar="N",
        help="Cut each image into at most N tiles (plus its global view), by choosing the largest --image-size that allows it.",
    ),
]
Lora = Annotated[
    Optional[list[str]],
    typer.Option(
        "--lora",
        metavar="FILE[:SCALE]",
        help="A LoRA adapter GGUF (smolcli convert-adapter) applied to the model at run time, SCALE 1 unless given; repeat to stack several.",
    ),
]


JsonSchema = Annotated[
    Optional[str],
    typer.Option(
        "--json-schema",
        metavar="SCHEMA",
        help="Answer with JSON that validates against this JSON Schema (a file, or inline JSON); --json carries the parsed value. Schemas the grammar cannot enforce exactly are refused.",
    ),
]
Grammar = Annotated[
    Optional[str],
    typer.Option("--grammar", metavar="FILE.gbnf", help="Hold the answer to this GBNF grammar (llama.cpp's format)."),
]
Logprobs = Annotated[
    Optional[int],
    typer.Option(
        "--logprobs",
        metavar="N",
        help="With --json: each generated token's id, text and log-probability, and the N likeliest alternatives (OpenAI's logprobs shape).",
    ),
]


def load_settings(
    mmproj: Mmproj = None,
    n_gpu_layers: GpuLayers = None,
    no_mmproj_offload: NoMmprojOffload = False,
    threads: Threads = None,
    ctx: Ctx = None,
    cache_type: Cache = None,
    max_memory: MaxMemory = None,
    no_cache: NoCache = False,
    repack_weights: RepackWeights = False,
    image_size: ImageSize = None,
    max_tiles: MaxTiles = None,
    verbose: Verbose = False,
    offline: Offline = False,
    lora: Lora = None,
    vision_engine: VisionEngine = "auto",
    vision_precision: VisionPrecision = "auto",
) -> LoadOptions:
    """The device, memory and detail options ask and chat share, as the library's settings (checked there)."""
    return LoadOptions(
        mmproj=mmproj,
        n_gpu_layers=n_gpu_layers,
        mmproj_offload=not no_mmproj_offload,
        threads=threads,
        ctx=ctx,
        cache_type=cache_type.value if cache_type else None,
        max_memory=max_memory,
        embedding_cache=not no_cache,
        repack_weights=repack_weights,
        image_size=image_size,
        max_tiles=max_tiles,
        verbose=verbose,
        offline=offline,
        lora=tuple(lora or ()),
        vision_engine=vision_engine,
        vision_precision=vision_precision,
    )


def generation_settings(
    max_tokens: MaxTokens = 256,
    temperature: Temperature = 0.0,
    top_p: TopP = 0.95,
    top_k: TopK = 40,
    seed: Seed = None,
    stop: Stop = None,
    json_schema: JsonSchema = None,
    grammar: Grammar = None,
) -> GenerationSettings:
    """The generation options ask and chat share; a bad one fails here, before a model is pulled or loaded."""
    settings = GenerationSettings(
        max_tokens,
        temperature,
        top_p,
        top_k,
        seed,
        tuple(stop or ()),
        json_schema=read_schema(json_schema) if json_schema is not None else None,
        grammar=read_grammar(grammar).gbnf if grammar is not None else None,
    )
    settings.limits(), settings.sampling(), settings.constraint()
    return settings


# each group's parameters are added to the command's options, and the command gets the group's result
SHARED_GROUPS = {"settings": load_settings, "generation": generation_settings}


def with_shared_options(command: Callable, shared: dict[str, Callable] = SHARED_GROUPS) -> Callable:
    """ask and chat declare only their own options and take `settings` and `generation`; this adds the rest.

    `shared` names the groups a command takes (serve: only `settings`, as each request brings its own generation).

    Typer reads a command's options from its signature, so the wrapper's signature is the command's
    own parameters followed by every group's, with their annotations resolved.
    """
    own = inspect.signature(command, eval_str=True)
    groups = {name: inspect.signature(group, eval_str=True) for name, group in shared.items()}
    parameters = [p for p in own.parameters.values() if p.name not in shared]
    parameters += [p for signature in groups.values() for p in signature.parameters.values()]

    @functools.wraps(command)
    def run(**values):
        for name, group in shared.items():
            values[name] = group(**{key: values.pop(key) for key in groups[name].parameters})
        return command(**values)

    del run.__wrapped__  # Typer must see the signature below, not the command's own
    run.__signature__ = own.replace(parameters=parameters)
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return run


def load_images(sources: list[str]) -> list[RGBImage]:
    if sum(source == STDIN for source in sources) > 1:
        raise SmolcliError("stdin can carry one image only: give the other images as files")
    return [load_image(source) for source in sources]
