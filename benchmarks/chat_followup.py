"""Time a chat's first turn (an image and a question) against a text follow-up that reuses the KV cache.

    python benchmarks/chat_followup.py --threads 2

A real-shaped random SmolVLM-256M (Q4_K_M model, Q8_0 mmproj), a 1024x768 photo-like image, the
image-embedding cache off. Both turns generate the same number of tokens (end of answer ignored),
so the difference is what the first turn evaluates: 13 tiles through the encoder and ~900 prompt
tokens, against the follow-up's dozen new tokens.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from embedding_cache import converted_pair  # benchmarks/embedding_cache.py, beside this script

from smolcli.runtime.chat.session import ChatSession
from smolcli.runtime.decoding.generation import GenerationLimits
from smolcli.runtime.decoding.sampling import Sampler, SamplingOptions
from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.vision.images import load_image
from smolcli.synthetic.images import photo_like


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=16, help="tokens generated in each turn")
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "smolcli" / "bench")
    args = parser.parse_args()

    model, mmproj = converted_pair(args.workdir)
    with tempfile.TemporaryDirectory() as scratch:
        image_path = Path(scratch) / "photo.png"
        photo_like(1024, 768).save(image_path)
        image = load_image(image_path)
    options = EngineOptions(threads=args.threads)
    limits = GenerationLimits(max_tokens=args.tokens, ignore_eos=True)
    with Engine(resolve_model_files(model, mmproj), options) as engine, Sampler(SamplingOptions()) as sampler:
        session = ChatSession(engine, sampler, limits)
        session.attach(image)
        rows = []
        for question in ("What is in this picture?", "And what colours does it have?"):
            before = engine.counters.images_encoded
            started = time.perf_counter()
            session.send(question)
            seconds = time.perf_counter() - started
            turn = session.turns[-1]
            rows.append((question, seconds, turn.prompt_tokens, engine.counters.images_encoded - before))
    print(f"SmolVLM 256m shapes, random weights, {args.tokens} tokens a turn, {args.threads} threads", file=sys.stderr)
    print(f"{'turn':<34}{'seconds':>9}{'evaluated tokens':>18}{'tiles encoded':>15}")
    for question, seconds, tokens, tiles in rows:
        print(f"{question:<34}{seconds:>9.2f}{tokens:>18}{tiles:>15}")
    print(f"follow-up / first turn: {rows[1][1] / rows[0][1]:.3f}x")


if __name__ == "__main__":
    main()
