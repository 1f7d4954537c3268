"""The OpenAI response shapes: a chat.completion, its stream of chat.completion.chunk events, usage, logprobs."""

from __future__ import annotations

import json
import secrets
import time

from smolcli.api.answer import Answer
from smolcli.serve.worker import Outcome


class Completion:
    """One request's id, time and model name, shared by its response or every chunk of its stream."""

    def __init__(self, model_id: str):
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model_id = model_id

    def _envelope(self, kind: str, choices: list) -> dict:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model_id,
            "system_fingerprint": None,
            "choices": choices,
        }

    def response(self, outcome: Outcome) -> dict:
        answer = outcome.answer
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": answer.text, "refusal": None},
            "logprobs": logprobs(answer),
            "finish_reason": answer.finish_reason,
        }
        return self._envelope("chat.completion", [choice]) | {"usage": usage(outcome), "smolcli": details(outcome)}

    def chunk(self, delta: dict, finish_reason: str | None = None, logprob_content: dict | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": logprob_content, "finish_reason": finish_reason}
        return self._envelope("chat.completion.chunk", [choice])

    def usage_chunk(self, outcome: Outcome) -> dict:
        return self._envelope("chat.completion.chunk", []) | {"usage": usage(outcome), "smolcli": details(outcome)}


def usage(outcome: Outcome) -> dict:
    completion = outcome.answer.usage.completion_tokens
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": outcome.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": outcome.cached_tokens},
    }


def details(outcome: Outcome) -> dict:
    """What this request cost the engine: beyond OpenAI's usage, under a key of our own."""
    return {
        "evaluated_tokens": outcome.evaluated_tokens,
        "images_encoded": outcome.images_encoded,
        "image_cache_hits": outcome.image_cache_hits,
        "conversation": outcome.conversation,
        "context_full": outcome.answer.context_full,
    }


def logprobs(answer: Answer) -> dict | None:
    if answer.logprobs is None:
        return None
    content = []
    for entry in answer.logprobs:
        top = [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in entry.top_logprobs]
        content.append({"token": entry.token, "logprob": entry.logprob, "bytes": entry.bytes, "top_logprobs": top})
    return {"content": content, "refusal": None}


def sse(data: dict | str) -> bytes:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode()
