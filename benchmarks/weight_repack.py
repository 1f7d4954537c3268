"""What llama.cpp's CPU weight repacking costs in memory and buys in speed, on a converted model.

llama.cpp keeps a second, reordered copy of quantized CPU weights (CPU_REPACK) for faster
matrix kernels. Each step is a fresh process: load the language model, prefill a text prompt
of --prompt-tokens, decode --new-tokens; runs alternate between the two settings.

  python benchmarks/weight_repack.py /path/to/model-Q4_K_M.gguf --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics

from measure import run_fresh

STEP = r"""
import json, sys, time
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.gguf.model_files import resolve_model_files
path, repack, n_prompt, n_new, threads = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
files = resolve_model_files(path, need_mmproj=False)
files = type(files)(files.model, None)
with Engine(files, EngineOptions(threads=threads, repack_weights=repack)) as engine:
    load_peak = peak_rss()
    context = engine.new_context(n_prompt + n_new + 8)
    prompt = [100 + (i % 1000) for i in range(n_prompt)]
    started = time.perf_counter()
    context.decode_tokens(prompt)
    prefill = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(n_new):
        context.accept(5)  # the token does not change the cost of a decode step
    decode = time.perf_counter() - started
    print(json.dumps({"load_s": engine.load_seconds, "load_peak_rss": load_peak, "peak_rss": peak_rss(),
                      "prefill_tokens_per_s": n_prompt / prefill, "decode_tokens_per_s": n_new / decode}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a converted language-model GGUF")
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    runs: dict[str, list[dict]] = {"repack": [], "no repack": []}
    for _ in range(args.repeats):
        for name, flag in (("repack", "1"), ("no repack", "0")):
            step = [args.model, flag, str(args.prompt_tokens), str(args.new_tokens), str(args.threads)]
            runs[name].append(run_fresh(STEP, step))
    table = {
        name: {
            key: statistics.median(run[key] for run in done)
            for key in ("load_s", "load_peak_rss", "peak_rss", "prefill_tokens_per_s", "decode_tokens_per_s")
        }
        for name, done in runs.items()
    }
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(
        f"{args.model}: {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, {args.threads} threads, "
        f"median of {args.repeats} alternating runs"
    )
    print(f"{'':10} {'load s':>7} {'load GiB':>9} {'peak GiB':>9} {'prefill tok/s':>14} {'decode tok/s':>13}")
    for name, row in table.items():
        print(
            f"{name:10} {row['load_s']:7.2f} {row['load_peak_rss'] / 2**30:9.2f} {row['peak_rss'] / 2**30:9.2f} "
            f"{row['prefill_tokens_per_s']:14.1f} {row['decode_tokens_per_s']:13.2f}"
        )
    with_, without = table["repack"], table["no repack"]
    print(
        f"no repack / repack: peak RSS {without['peak_rss'] / with_['peak_rss']:.2f}x, "
        f"prefill speed {without['prefill_tokens_per_s'] / with_['prefill_tokens_per_s']:.2f}x, "
        f"decode speed {without['decode_tokens_per_s'] / with_['decode_tokens_per_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
