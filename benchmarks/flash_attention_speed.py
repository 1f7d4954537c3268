"""Prefill and decode speed with llama.cpp's flash attention on and off, side by side, on the CPU.

    python benchmarks/flash_attention_speed.py [--shape 256m] [--lengths 1000,3000] [--tokens 32] [--repeats 3]

The engine turns flash attention off for an f16 KV cache on the CPU, because it moves the logits
over long caches (benchmarks/flash_attention_logits.py); this is what that costs or saves. Random
weights in the release's real shapes (smolcli.bench.files, Q4_K_M), a text prompt of N tokens
prefilled, then --tokens decoded one at a time (greedy), each as a chat's follow-up or a clip's
question would be; the runs interleave on/off, and the table shows the best of --repeats.
"""

from __future__ import annotations

import argparse
import os
import time

from vision_engines import cpu_name  # benchmarks/, beside this script


def one_run(model_path, flash: bool, n_prompt: int, n_new: int, threads: int) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s)."""
    import numpy as np

    from smolcli.runtime.gguf.model_files import resolve_model_files
    from smolcli.runtime.llama.engine import Engine, EngineOptions

    files = resolve_model_files(model_path, None)
    with Engine(files, EngineOptions(threads=threads, flash_attention=flash)) as engine:
        context = engine.new_context(n_prompt + n_new + 16)
        rng = np.random.default_rng(0)
        tokens = [int(t) for t in rng.integers(100, engine.n_vocab - 100, n_prompt)]
        started = time.perf_counter()
        context.decode_tokens(tokens)
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(n_new):
            context.decode_tokens([int(np.argmax(context.last_logits()))])
        decode = time.perf_counter() - started
    return n_prompt / prefill, n_new / decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256m")
    parser.add_argument("--lengths", default="1000,3000")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from smolcli.bench.files import prepare_files

    files, _ = prepare_files(args.shape, "Q4_K_M", "Q8_0", report=print)
    print(f"CPU: {cpu_name()}, {args.threads} threads, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    print(f"{args.shape} Q4_K_M, f16 KV cache, best of {args.repeats} interleaved runs")
    print("| prompt tokens | flash attention | prefill tok/s | decode tok/s |")
    print("| --- | --- | --- | --- |")
    for n_prompt in (int(n) for n in args.lengths.split(",")):
        best = {True: (0.0, 0.0), False: (0.0, 0.0)}
        for _ in range(args.repeats):
            for flash in (True, False):
                prefill, decode = one_run(files.model, flash, n_prompt, args.tokens, args.threads)
                best[flash] = (max(best[flash][0], prefill), max(best[flash][1], decode))
        for flash in (True, False):
            print(f"| {n_prompt} | {'on' if flash else 'off'} | {best[flash][0]:.0f} | {best[flash][1]:.1f} |")
        ratio = best[False][0] / best[True][0], best[False][1] / best[True][1]
        print(f"| {n_prompt} | off / on | {ratio[0]:.2f}x | {ratio[1]:.2f}x |")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
