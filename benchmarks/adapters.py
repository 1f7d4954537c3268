"""What an adapter costs: merging it at conversion, converting it for llama.cpp, and decoding with it at run time.

On a random-weight checkpoint in SmolVLM-256M's real shapes (bf16), with a random adapter in the official
fine-tuning notebook's layout (r=8, lora_alpha=8, q/k/v/o/gate/up/down, which also hits SigLIP's q/k/v):
DoRA for the merge (what the notebook trains), plain LoRA for the runtime file. Each step runs in a fresh
process (peak RSS its own).

  python benchmarks/adapters.py --workdir /tmp/adapter-bench --tokens 64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from measure import run_fresh

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

CONVERT = r"""
import json, sys, time
from smolcli.convert import convert_checkpoint
base, out, quant, adapter = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] or None
started = time.perf_counter()
result = convert_checkpoint(base, out, quant, "F16", name="bench", adapter=adapter)
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss": peak_rss(), "model": str(result.model),
                  "mmproj": str(result.mmproj)}))
"""

CONVERT_ADAPTER = r"""
import json, sys, time
from smolcli.convert.lora_adapter import convert_adapter
started = time.perf_counter()
result = convert_adapter(sys.argv[1], sys.argv[2], sys.argv[3], "F16", "F16")
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss": peak_rss(), "adapter": str(result.adapter),
                  "size": result.adapter.stat().st_size}))
"""

DECODE = r"""
import json, sys, time
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.gguf.model_files import resolve_model_files
model, lora, n_new = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = resolve_model_files(model, need_mmproj=False)
with Engine(type(files)(files.model, None), EngineOptions(threads=2, lora=((lora, 1.0),) if lora else ())) as engine:
    context = engine.new_context(512 + n_new)
    started = time.perf_counter()
    context.decode_tokens([100 + i for i in range(256)])
    prefill = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(n_new):
        context.accept(5)
    print(json.dumps({"prefill_tokens_per_s": 256 / prefill, "decode_tokens_per_s": n_new / (time.perf_counter() - started),
                      "peak_rss": peak_rss()}))
"""


def adapter_modules(checkpoint_dir: Path) -> list[str]:
    from smolcli.convert.adapter_folder import linear_modules
    from smolcli.convert.checkpoint import open_checkpoint

    return [m for m in linear_modules(open_checkpoint(checkpoint_dir)) if m.rsplit(".", 1)[-1] in TARGETS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("adapter-bench"))
    parser.add_argument("--quant", default="Q8_0")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    from smolcli.synthetic.random_adapter import write_adapter
    from smolcli.synthetic.random_checkpoint import write_random_checkpoint

    work = args.workdir
    base = work / "checkpoint"
    if not (base / "model.safetensors").exists():
        write_random_checkpoint(base, "256m", "SmolVLM", "BF16")
    modules = adapter_modules(base)
    dora = write_adapter(work / "dora", base, modules, rank=8, alpha=8.0, dora=True)
    lora = write_adapter(work / "lora", base, modules, rank=8, alpha=8.0)

    figures = {}
    figures["convert"] = run_fresh(CONVERT, [str(base), str(work / "plain"), args.quant, ""])
    figures["convert --adapter (DoRA)"] = run_fresh(CONVERT, [str(base), str(work / "merged"), args.quant, str(dora)])
    figures["convert-adapter (LoRA, F16)"] = run_fresh(CONVERT_ADAPTER, [str(lora), str(base), str(work / "lora-gguf")])
    model = figures["convert"]["model"]
    adapter = figures["convert-adapter (LoRA, F16)"]["adapter"]
    figures["decode base"] = run_fresh(DECODE, [model, "", str(args.tokens)])
    figures["decode base + --lora"] = run_fresh(DECODE, [model, adapter, str(args.tokens)])
    figures["decode merged"] = run_fresh(DECODE, [figures["convert --adapter (DoRA)"]["model"], "", str(args.tokens)])
    for step, values in figures.items():
        shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in values.items() if k not in ("output",)}
        print(f"{step}: {json.dumps(shown)}")


if __name__ == "__main__":
    main()
