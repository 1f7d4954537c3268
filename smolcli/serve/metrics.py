"""The server's counters since start, at GET /metrics in Prometheus' text format.

The engine's own counters (images through the vision encoder, tokens evaluated) are read from
the library's Model; requests, refusals and reuse are counted here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields


@dataclass
class ServerCounters:
    requests: int = 0  # chat completions answered (200)
    rejected_queue_full: int = 0  # 503s
    timed_out: int = 0  # 408s
    cancelled: int = 0  # clients that went away before their answer ended
    failed: int = 0  # other errors while answering
    conversations_continued: int = 0  # requests that went on from a kept Chat's KV cache
    conversations_replayed: int = 0  # requests whose history had to be evaluated again
    completion_tokens: int = 0
    batch_steps: int = 0  # --parallel: llama_decode calls that decoded several answers' tokens together
    batch_tokens: int = 0  # the tokens they decoded (over batch_steps: how many answers went together)


# engine counter -> (metric name, help)
ENGINE_METRICS = {
    "images_encoded": ("smolcli_images_encoded_total", "image tiles run through the vision encoder"),
    "cache_hits": ("smolcli_image_cache_hits_total", "image tiles whose embeddings came from the embedding cache"),
    "text_tokens": ("smolcli_prompt_text_tokens_total", "prompt text tokens evaluated"),
    "image_tokens": ("smolcli_prompt_image_tokens_total", "prompt image tokens evaluated"),
    "generated_tokens": ("smolcli_generated_tokens_total", "tokens generated and fed back"),
}


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.counters = ServerCounters()
        self.parked = (0, 0)  # the conversations kept between requests, and the parked ones' saved states' bytes

    def set_parked(self, count: int, nbytes: int) -> None:
        with self._lock:
            self.parked = (count, nbytes)

    def add(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self.counters, name, getattr(self.counters, name) + amount)

    def render(self, engine_counters, queue_depth: int, ready: bool) -> str:
        with self._lock:
            ours = {f.name: getattr(self.counters, f.name) for f in fields(ServerCounters)}
            parked, parked_bytes = self.parked
        lines = []

        def metric(name: str, kind: str, help_text: str, value) -> None:
            lines.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"))

        for name, value in ours.items():
            metric(f"smolcli_{name}_total", "counter", name.replace("_", " "), value)
        for field_name, (name, help_text) in ENGINE_METRICS.items():
            metric(name, "counter", help_text, getattr(engine_counters, field_name, 0) if engine_counters else 0)
        prompt = (engine_counters.text_tokens + engine_counters.image_tokens) if engine_counters else 0
        metric("smolcli_prompt_tokens_evaluated_total", "counter", "prompt tokens evaluated, text and image", prompt)
        metric("smolcli_queue_depth", "gauge", "requests waiting or being answered", queue_depth)
        metric("smolcli_ready", "gauge", "1 once the model is loaded", int(ready))
        metric("smolcli_conversations_kept", "gauge", "conversations kept between requests", parked)
        metric("smolcli_conversations_parked_bytes", "gauge", "their saved states' bytes", parked_bytes)
        return "\n".join(lines) + "\n"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text back into {name: value}: for tests and the load benchmark."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values
