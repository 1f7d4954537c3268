"""`smolcli ask`: one question, with images, answered on stdout as it is generated."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Annotated, Optional

import typer

from smolcli.cli import run_options as opt
from smolcli.cli.memory_limit import MemoryBudget, parse_max_memory
from smolcli.cli.output import progress
from smolcli.cli.streaming import write_answer
from smolcli.errors import SmolcliError
from smolcli.runtime.context_size import ask_context_size, check_prompt_fits
from smolcli.runtime.engine import Engine
from smolcli.runtime.generation import Generation, GenerationLimits, generate
from smolcli.runtime.image_tiles import PREPROC_KEY
from smolcli.runtime.images import STDIN
from smolcli.runtime.peak_memory import peak_rss_bytes
from smolcli.runtime.prompting import first_turn, place_images
from smolcli.runtime.sampling import Sampler


def ask(
    model: opt.Model,
    prompt: Annotated[Optional[str], typer.Argument(help="The question; read from stdin when left out. <image> marks where each image goes.")] = None,
    image: opt.Images = None,
    mmproj: opt.Mmproj = None,
    system: opt.System = None,
    max_tokens: opt.MaxTokens = 256,
    temperature: opt.Temperature = 0.0,
    top_p: opt.TopP = 0.95,
    top_k: opt.TopK = 40,
    seed: opt.Seed = None,
    stop: opt.Stop = None,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Generate exactly --max-tokens tokens (benchmarks).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (answer, usage, timings) instead of streaming.")] = False,
    n_gpu_layers: opt.GpuLayers = None,
    no_mmproj_offload: opt.NoMmprojOffload = False,
    threads: opt.Threads = None,
    ctx: opt.Ctx = None,
    cache_type: opt.Cache = None,
    max_memory: opt.MaxMemory = None,
    no_cache: opt.NoCache = False,
    repack_weights: opt.RepackWeights = False,
    image_size: opt.ImageSize = None,
    max_tiles: opt.MaxTiles = None,
    verbose: opt.Verbose = False,
    offline: opt.Offline = False,
) -> None:
    """Answer one question about zero or more images.

    Images go before the text unless <image> markers in the prompt place them.
    Greedy decoding by default: the same input gives the same answer.

    Examples:

      smolcli ask -m SmolVLM-256M-Instruct-Q4_K_M.gguf -i photo.jpg "What is in this image?"

      cat scan.png | smolcli ask -m models/ -i - "Transcribe the text."

      smolcli ask -m models/ -i a.jpg -i b.jpg "Compare <image> with <image>."

      echo "Describe it in one word." | smolcli ask -m models/ -i cat.webp --json

      smolcli ask -m SmolVLM-256M-Instruct -i scan.png --max-tiles 4 "Summarize."

      smolcli ask -m smolvlm-2.2b -i photo.jpg --max-memory 3G "Describe it."
    """
    limits = GenerationLimits(max_tokens, tuple(stop or ()), ignore_eos)
    sampling = opt.sampling_options(temperature, top_k, top_p, seed)
    opt.check_ctx(ctx)
    memory_limit = parse_max_memory(max_memory)
    sources = image or []
    question = prompt if prompt is not None else _prompt_from_stdin(sources)
    images = opt.load_images(sources)
    if not question.strip() and not images:
        raise SmolcliError("the prompt is empty: give a question as an argument or on stdin")
    text = first_turn(place_images(question, len(images)), system)

    files = opt.model_files(model, mmproj, need_vision=bool(images), offline=offline)
    if not images:
        files = dataclasses.replace(files, mmproj=None)  # a text-only question does not load the vision encoder
    files = opt.with_image_detail(files, images, image_size, max_tiles)
    options = opt.engine_options(n_gpu_layers, no_mmproj_offload, threads, cache_type, verbose, no_cache, repack_weights)
    budget = MemoryBudget.for_run(
        memory_limit, files, options, images, cache_type.value if cache_type else None, "--max-tiles N or --image-size PX"
    )
    if budget:
        # before loading: the images' tokens alone give a context no larger than the real one
        budget.plan(ctx or ask_context_size(budget.image_tokens, max_tokens, budget.n_ctx_train))

    memory_plan = None
    with Engine(files, options) as engine, Sampler(sampling) as sampler:
        tokenized = engine.tokenize(text, images)
        try:
            context_started = time.perf_counter()
            n_ctx = ctx or ask_context_size(tokenized.n_tokens, max_tokens, engine.n_ctx_train)
            if budget:
                memory_plan = budget.plan(n_ctx)
                engine.options.cache_type = memory_plan.cache_type
            engine.create_context(n_ctx)
            load_seconds = engine.load_seconds + time.perf_counter() - context_started
            fix = "raise --ctx" if ctx else f"the model holds at most {engine.n_ctx_train} tokens; shorten the prompt"
            check_prompt_fits(tokenized.n_tokens, tokenized.n_image_tokens, engine.n_ctx, f"{fix} or use fewer or smaller images")
            engine.evaluate(tokenized)
        finally:
            tokenized.free()
        answer = generate(engine, sampler, limits, on_text=None if as_json else write_answer)
        if answer.context_full:
            progress(f"note: the {engine.n_ctx}-token context filled up after {len(answer.tokens)} tokens; raise --ctx for longer answers")
        if as_json:
            report = _report(engine, answer, tokenized.n_tokens, tokenized.n_image_tokens, load_seconds)
            if memory_plan:
                report["memory_plan"] = budget.report(memory_plan)
            write_answer(json.dumps(report, indent=2) + "\n")
        else:
            write_answer("\n")


def _prompt_from_stdin(image_sources: list[str]) -> str:
    if STDIN in image_sources:
        raise SmolcliError("stdin carries the image (-i -), so give the prompt as an argument")
    if sys.stdin is None or sys.stdin.isatty():
        raise SmolcliError('no prompt: give it as an argument (smolcli ask -m MODEL "question") or pipe it on stdin')
    return sys.stdin.read().strip()


def _per_second(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


def _report(engine: Engine, answer: Generation, prompt_tokens: int, image_tokens: int, load_seconds: float) -> dict:
    counters = engine.counters
    return {
        "text": answer.text,
        "finish_reason": answer.finish_reason,
        "usage": {
            "prompt_tokens": prompt_tokens, "image_tokens": image_tokens, "completion_tokens": len(answer.tokens),
            # image chunks (tiles): run through the vision encoder, or taken from the embedding cache
            "images_encoded": counters.images_encoded, "image_cache_hits": counters.cache_hits,
        },
        "timings": {
            "load_s": round(load_seconds, 6),
            "image_encode_s": round(counters.encode_seconds, 6),
            "prefill_s": round(counters.prefill_seconds, 6),
            "decode_s": round(counters.decode_seconds, 6),
            "decode_tokens_per_s": _per_second(counters.generated_tokens, counters.decode_seconds),
            "prefill_tokens_per_s": _per_second(prompt_tokens, counters.prefill_seconds),
        },
        "peak_memory_bytes": peak_rss_bytes(),
        "model": str(engine.files.model.path),
        "mmproj": str(engine.files.mmproj.path) if engine.files.mmproj else None,
        "image_longest_edge": engine.files.mmproj.metadata.get(PREPROC_KEY) if engine.files.mmproj else None,
    }
