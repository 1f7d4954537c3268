"""What a loaded model has done since load, across all its contexts: tests, benchmarks and Answers read these."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class Counters:
    images_encoded: int = 0  # image chunks (tiles) run through the vision encoder
    cache_hits: int = 0  # image chunks whose embeddings came from the embedding cache instead
    cache_misses: int = 0
    prefix_tokens_restored: int = 0  # prompt tokens whose KV state came from the prefix cache instead of a prefill
    image_tokens: int = 0
    text_tokens: int = 0
    generated_tokens: int = 0
    encode_seconds: float = 0.0  # getting image embeddings: the encoder, or reading the cache
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    def snapshot(self) -> "Counters":
        return dataclasses.replace(self)

    def since(self, before: "Counters") -> "Counters":
        """What was done between `before` (a snapshot) and now."""
        return Counters(**{f.name: getattr(self, f.name) - getattr(before, f.name) for f in dataclasses.fields(self)})
