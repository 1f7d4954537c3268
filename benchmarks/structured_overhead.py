"""What a structured answer's per-token work in Python costs, at SmolLM2's vocabulary size (49152 tokens).

No model: the UTF-8 guard and Sampler.sample (the sampler chain applied and accepted from Python,
so a choice of a masked token is refused before llama.cpp accepts it) run on a synthetic
byte-level vocabulary and random logits. Compare the per-token figures with a decode step
(benchmarks/speed.py): the 256M model decodes in milliseconds per token on CPU.

  python benchmarks/structured_overhead.py --repeats 200
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from smolcli.runtime.decoding.sampling import Sampler, SamplingOptions
from smolcli.runtime.decoding.utf8_guard import Utf8Guard, Utf8Vocabulary

N_VOCAB = 49152


def synthetic_pieces(rng: np.random.Generator) -> list[bytes]:
    """All 256 bytes, then pieces cut from UTF-8 text at any byte, as byte-level BPE merges are."""
    text = "".join(chr(c) for c in rng.integers(0x20, 0x3000, 400_000) if not 0xD800 <= c <= 0xDFFF).encode()
    text = b" ".join([text, b"the of and to in is that for it as with was on be at by this"] * 2)
    pieces = [bytes([b]) for b in range(256)]
    while len(pieces) < N_VOCAB:
        start = int(rng.integers(0, len(text) - 8))
        pieces.append(text[start : start + int(rng.integers(2, 8))])
    return pieces


def best_and_median(seconds: list[float]) -> str:
    return f"best {min(seconds) * 1e6:.0f} us, median {statistics.median(seconds) * 1e6:.0f} us"


def timed(call, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pieces = synthetic_pieces(rng)
    started = time.perf_counter()
    vocabulary = Utf8Vocabulary(pieces)
    print(f"vocabulary of {len(pieces)} pieces classified once per model: {time.perf_counter() - started:.3f} s")
    print(f"pieces that start with a continuation byte: {len(vocabulary.continuation_tokens)}")
    logits = rng.standard_normal(N_VOCAB).astype(np.float32)
    at_boundary = Utf8Guard(vocabulary)
    inside = Utf8Guard(vocabulary)
    inside.advance("中".encode()[:1])
    print(
        "guard mask at a character boundary:",
        best_and_median(timed(lambda: at_boundary.mask(logits.copy()), args.repeats)),
    )
    print(
        "guard mask inside a character:     ", best_and_median(timed(lambda: inside.mask(logits.copy()), args.repeats))
    )
    options = SamplingOptions(temperature=0.8, seed=0)
    with Sampler(options) as sampler:
        print(
            "Sampler.sample (top-k, top-p, temperature, draw):",
            best_and_median(timed(lambda: sampler.sample(logits), args.repeats)),
        )


if __name__ == "__main__":
    main()
