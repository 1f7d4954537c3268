"""How far llama.cpp's CPU flash attention moves the last logits from transformers', by context length.

A tiny random SmolVLM2 checkpoint, converted F32/F32 (an F16 KV cache, the engine's default), and a
text-only prompt of N tokens: prefilled in one piece, or with its last K tokens decoded on their own
(as every generated token, a chat's follow-up turn, or the question after a clip's frames is). Each
with the engine's default attention (flash attention: llama.cpp chooses it on the CPU) and with it
off; the figure is max |dlogit| against transformers' fp32 model on the same token ids. Needs the
test extra (torch, transformers).

    python benchmarks/flash_attention_logits.py --lengths 200,1000,2000,3500 --last 0,1,9
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="200,1000,2000,3500", help="prompt lengths in tokens")
    parser.add_argument("--last", default="0,1,9", help="tokens decoded on their own at the end (0: one piece)")
    args = parser.parse_args()

    import torchvision_shim  # tests/: transformers imports the installed torchvision, which needs it first

    torchvision_shim.install()
    import torch
    from transformers import AutoModelForImageTextToText
    from video_reference import exact_attention  # tests/: flash attention off in an engine's contexts

    from smolcli.convert import convert_checkpoint
    from smolcli.runtime.gguf.model_files import resolve_model_files
    from smolcli.runtime.llama.engine import Engine, EngineOptions
    from smolcli.synthetic.random_checkpoint import write_random_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = write_random_checkpoint(Path(folder) / "ck", "tiny", "SmolVLM2", "F32", seed=0)
        pair = convert_checkpoint(checkpoint, Path(folder) / "pair", "F32", "F32", name="tiny-SmolVLM2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
        engines = {}
        for attention in ("flash (default)", "off"):
            engine = Engine(resolve_model_files(pair.model, None), EngineOptions(threads=2))
            if attention == "off":
                exact_attention(engine)
            engines[attention] = (engine, engine.new_context(4096))
        text = " ".join(f"word{index % 97} and then some more text {index}" for index in range(600))
        prompt = engines["off"][0].tokenize(text, [])
        tokens = [token for chunk in prompt.chunks for token in chunk.tokens]
        prompt.free()
        for length in (int(n) for n in args.lengths.split(",")):
            ids = tokens[:length]
            with torch.no_grad():
                expected = model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
            for last in (int(n) for n in args.last.split(",")):
                figures = []
                for attention, (_engine, context) in engines.items():
                    context.clear()
                    if last:
                        context.decode_tokens(ids[:-last])
                    context.decode_tokens(ids[-last:] if last else ids)
                    gap = np.abs(context.last_logits()[: expected.shape[0]] - expected).max()
                    figures.append(f"{attention} {gap:.4f}")
                piece = f"last {last} on their own" if last else "one piece"
                print(f"{length} tokens, {piece}: max |dlogit| " + ", ".join(figures), flush=True)
        for engine, _context in engines.values():
            engine.close()


if __name__ == "__main__":
    main()
