"""Where an image prompt's prefill spends its time: the 1024x768 photo's prompt (889 tokens on 256M) prefilled
as one run of rows under each setting of the text model's type, llama.cpp's weight repacking, n_ubatch,
flash attention and threads, interleaved in one process.

    python benchmarks/prefill_sweep.py [--shape 256m] [--quants Q4_K_M,Q8_0] [--repack off,on]
        [--ubatch 512,1024,2048] [--flash on,off] [--threads 2,1] [--repeats 3]

`smolcli bench`'s files (random weights in SmolVLM's real shapes, each --quants type with a Q8_0 mmproj, made
once under $SMOLCLI_HOME/bench) and its photo, asked "What is in this image?". The tiles go through the ONNX
encoder once and are kept in an embedding cache in a temporary folder, so every measurement is the prefill
alone: the engine's prefill_seconds (llama_decode and the token_embd lookups). Each round measures every
setting once, in an order that turns from round to round; a setting gets a fresh context (n_ctx 1024) and
one untimed prefill before its first timed one. The table gives medians and bests, with the max |dlogit| of
the prompt's last logits against the first setting's (how far a type or a batch cut moves the answer). The
machine may be shared: the load average is printed with the figures; compare within one run.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from vision_engines import PROMPT, cpu_name, load_average  # benchmarks/, beside this script


def words(text: str) -> list[str]:
    return [word.strip() for word in text.split(",") if word.strip()]


def on_off(text: str) -> list[bool]:
    return [word == "on" for word in words(text)]


def main() -> None:
    from smolcli.bench.files import prepare_files
    from smolcli.runtime.gguf.model_files import resolve_model_files
    from smolcli.runtime.llama.engine import Engine, EngineOptions
    from smolcli.runtime.vision.embedding_cache import EmbeddingCache
    from smolcli.runtime.vision.images import load_image
    from smolcli.runtime.vision.onnx_vision import OnnxVisionEncoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256m")
    parser.add_argument("--quants", default="Q4_K_M", help="text model types, comma-separated")
    parser.add_argument("--repack", default="off", help="llama.cpp's CPU weight repacking: off, on or off,on")
    parser.add_argument("--ubatch", default="512", help="n_ubatch values, comma-separated")
    parser.add_argument("--flash", default="on", help="flash attention: on, off or on,off")
    parser.add_argument("--threads", default="2", help="thread counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    quants, repacks = words(args.quants), on_off(args.repack)
    ubatches, flashes = [int(u) for u in words(args.ubatch)], on_off(args.flash)
    thread_counts = [int(t) for t in words(args.threads)]
    pairs = {quant: prepare_files(args.shape, quant, "Q8_0", report=print)[0] for quant in quants}
    scratch = tempfile.TemporaryDirectory(prefix="prefill-sweep-")
    cache = EmbeddingCache(Path(scratch.name))
    encoder = OnnxVisionEncoder(max(thread_counts))  # its ONNX file as `smolcli ask` keeps it
    image = load_image(next(iter(pairs.values())).image)

    engines, prompts = {}, {}
    for quant, repack in itertools.product(quants, repacks):
        files = resolve_model_files(pairs[quant].model, pairs[quant].mmproj)
        options = EngineOptions(threads=max(thread_counts), vision_encoder=encoder, embedding_cache=cache)
        options.repack_weights = repack
        engine = Engine(files, options)
        engines[quant, repack] = engine
        prompts[quant, repack] = engine.tokenize(PROMPT, [image])
    settings = list(itertools.product(engines, ubatches, flashes, thread_counts))
    first = next(iter(prompts.values()))
    print(f"{args.shape}: {first.n_tokens} prompt tokens ({first.n_image_tokens} image); {len(settings)} settings")

    def prefill(setting, context) -> tuple[float, float]:
        """(prefill seconds, the process's CPU seconds over the same call)."""
        key, _, _, _ = setting
        engine = engines[key]
        context.clear()
        before, cpu = engine.counters.prefill_seconds, time.process_time()
        engine.evaluate(prompts[key], context)
        return engine.counters.prefill_seconds - before, time.process_time() - cpu

    def new_context(setting):
        key, ubatch, flash, threads = setting
        engine = engines[key]
        engine.options.n_ubatch, engine.options.flash_attention = ubatch, flash
        engine.threads = threads  # read by new_context for the context's threads
        return engine.new_context(1024)

    started = time.perf_counter()
    logits = {}
    for setting in settings:  # the first prefill encodes the tiles (once, into the cache) and warms up
        context = new_context(setting)
        prefill(setting, context)
        logits[setting] = context.last_logits().copy()
        context.free()
    print(f"  tiles encoded and every setting warmed up in {time.perf_counter() - started:.0f} s (not timed)")
    print(load_average(), flush=True)
    seconds: dict = {setting: [] for setting in settings}
    cpu_seconds: dict = {setting: [] for setting in settings}
    for round_ in range(args.repeats):
        shift = round_ % len(settings)
        order = settings[shift:] + settings[:shift]
        if round_ % 2:
            order.reverse()
        for setting in order:
            context = new_context(setting)
            wall, cpu = prefill(setting, context)
            seconds[setting].append(wall)
            cpu_seconds[setting].append(cpu)
            context.free()
        print(f"  round {round_ + 1} done; {load_average()}", flush=True)
    for engine in engines.values():
        engine.close()
    scratch.cleanup()

    print(f"CPU: {cpu_name()}; the machine may be shared ({load_average()})")
    print(f"{args.shape}, {first.n_tokens} prompt tokens as one run of rows, n_batch 2048, f16 KV cache,")
    print(f"median and best of {args.repeats} interleaved rounds; dlogit: max |last logits - the first row's|")
    print("CPU s: the process's CPU time over the prefill (on a busy machine, one thread's is the steadier figure)")
    print("| text model | repack | n_ubatch | flash attention | threads | median s | best s | tok/s | CPU s | dlogit |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    reference = logits[settings[0]]
    for setting in settings:
        (quant, repack), ubatch, flash, threads = setting
        median = statistics.median(seconds[setting])
        diff = float(np.abs(logits[setting] - reference).max())
        print(
            f"| {quant} | {'on' if repack else 'off'} | {ubatch} | {'on' if flash else 'off'} | {threads} "
            f"| {median:.3f} | {min(seconds[setting]):.3f} | {first.n_tokens / median:.0f} "
            f"| {statistics.median(cpu_seconds[setting]):.3f} | {diff:.2e} |"
        )


if __name__ == "__main__":
    main()
