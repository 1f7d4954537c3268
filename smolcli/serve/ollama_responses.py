"""ollama's response shapes: chat and generate replies (whole or one JSON object per line), the model listings.

Durations are nanoseconds, as ollama writes them; prompt_eval_count is the prompt tokens this
request evaluated, so a conversation continued from its KV cache counts only its new message.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone

from smolcli.api.model import Model
from smolcli.api.video import trained_on_video
from smolcli.serve.api_errors import APIError
from smolcli.serve.worker import Outcome

# the ollama API release whose shapes these are: clients read /api/version to know what they may send
OLLAMA_API_VERSION = "0.12.0"
NS = 1_000_000_000
# a served model stays loaded until the server stops; ollama lists an expiry, so a far one
NEVER = "2318-01-01T00:00:00Z"


def error_body(error: APIError) -> dict:
    return {"error": error.message}


def ndjson(value: dict) -> bytes:
    return (json.dumps(value, ensure_ascii=False) + "\n").encode()


def now_iso() -> str:
    return _iso(time.time())


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


class Reply:
    """One /api/chat (kind "chat") or /api/generate ("generate") request's replies, from its arrival time."""

    def __init__(self, model: str, kind: str, arrived: float):
        self.model = model
        self.kind = kind
        self.arrived = arrived  # time.monotonic()

    def _envelope(self, text: str, done: bool) -> dict:
        body = {"model": self.model, "created_at": now_iso()}
        if self.kind == "chat":
            body["message"] = {"role": "assistant", "content": text}
        else:
            body["response"] = text
        return body | {"done": done}

    def piece(self, text: str) -> dict:
        return self._envelope(text, False)

    def loaded(self) -> dict:
        """The answer to a request with nothing to answer: ollama's way to load a model ahead."""
        return self._envelope("", True) | {"done_reason": "load"}

    def final(self, outcome: Outcome, text: str) -> dict:
        """The last object: the whole text when not streamed ("" after a stream), why it ended, and the counts."""
        answer = outcome.answer
        timings = answer.timings
        return self._envelope(text, True) | {
            "done_reason": answer.finish_reason,
            "total_duration": int((time.monotonic() - self.arrived) * NS),
            "load_duration": int(timings.load_s * NS),
            "prompt_eval_count": outcome.evaluated_tokens,
            "prompt_eval_duration": int((timings.image_encode_s + timings.prefill_s) * NS),
            "eval_count": answer.usage.completion_tokens,
            "eval_duration": int(timings.decode_s * NS),
        }


# --- listings -------------------------------------------------------------------------------


def model_entry(name: str, model: Model | None) -> dict:
    """/api/tags' entry for the served model (its files' facts once the pair is found)."""
    entry = {"name": name, "model": name, "modified_at": now_iso(), "size": 0, "digest": "", "details": {}}
    if model is None:
        return entry
    files = model.files
    stat = files.model.path.stat()
    size = files.model.size + (files.mmproj.size if files.mmproj else 0)
    # ollama's digest is its manifest's sha256; ours identifies the files without reading gigabytes
    identity = f"{files.model.path}:{size}:{stat.st_mtime_ns}".encode()
    return entry | {
        "modified_at": _iso(stat.st_mtime),
        "size": size,
        "digest": hashlib.sha256(identity).hexdigest(),
        "details": details(model),
    }


def details(model: Model) -> dict:
    files = model.files
    family = files.model.architecture
    types = files.model.tensor_types
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family, *([files.mmproj.architecture] if files.mmproj else [])],
        "parameter_size": _parameter_size(files.model.parameters + (files.mmproj.parameters if files.mmproj else 0)),
        "quantization_level": max(types, key=types.get) if types else "",
    }


def capabilities(model: Model) -> list[str]:
    """ollama's capability names, and "video" (ours) when the model was trained on clips."""
    found = ["completion"]
    if model.files.mmproj is not None:
        found.append("vision")
        if trained_on_video(model.files.model):
            found.append("video")
    return found


def show(model: Model, settings_text: str) -> dict:
    metadata = model.files.model.metadata
    info = {key: value for key, value in metadata.items() if isinstance(value, (str, int, float, bool))}
    info.pop("tokenizer.chat_template", None)
    info["general.parameter_count"] = model.files.model.parameters
    return {
        "modelfile": f"# served by smolcli\nFROM {model.files.model.path}\n",
        "parameters": settings_text,
        "template": str(metadata.get("tokenizer.chat_template") or ""),
        "details": details(model),
        "model_info": info,
        "capabilities": capabilities(model),
        "modified_at": _iso(model.files.model.path.stat().st_mtime),
    }


def running(name: str, model: Model) -> dict:
    """/api/ps' entry: the model's trained context (each conversation's own is sized to it, at most)."""
    summary = model.files.model
    n_ctx_train = summary.metadata.get(f"{summary.architecture}.context_length", 0)
    return model_entry(name, model) | {"expires_at": NEVER, "size_vram": 0, "context_length": n_ctx_train}


def _parameter_size(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}".replace(".0", "")
    return str(count)
