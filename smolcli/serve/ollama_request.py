"""ollama's POST /api/chat and /api/generate bodies, checked, as the ChatRequest the OpenAI route makes.

An ollama request is rewritten as the OpenAI body it means (its images as data: URIs, its
options as OpenAI's fields, `format` as response_format) and checked by the same code, so both
routes hold requests to the same limits; what only ollama has (top_k, num_ctx) is set after.
Errors name ollama's fields; the app writes them as ollama's {"error": "..."}.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from smolcli.serve.api_errors import APIError, bad_request
from smolcli.serve.chat_request import ChatRequest, chat_request
from smolcli.serve.settings import ServeSettings

LATEST = ":latest"
# used: temperature, top_p, top_k, seed, num_predict, stop, num_ctx. Options that change nothing here (threads,
# GPU layers, memory mapping...) are accepted and ignored, as ollama ignores those its runner lacks; these
# would change the answer in a way this server cannot: refused unless at their neutral value
NEUTRAL_OPTIONS = {"repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "min_p": 0.0}
# the library's settings by ollama's names, for the errors that name them
OLLAMA_FIELDS = {
    **{name: f"options.{name}" for name in ("temperature", "top_p", "top_k", "seed", "stop")},
    "max_tokens": "options.num_predict",
    "images": "images",
    "system": "the system message",
    "json_schema": "format",
}


@dataclass(frozen=True)
class OllamaCall:
    """A checked request: what the worker answers, or nothing to answer (an empty one only loads the model)."""

    model: str  # as the client named it, echoed in every reply
    stream: bool
    request: ChatRequest | None  # None: no message or prompt, ollama's "load the model" call


def served_name(model_id: str) -> str:
    """The name /api/tags lists: the model id with ollama's tag."""
    return model_id if ":" in model_id else model_id + LATEST


def check_model(body: dict, model_id: str) -> str:
    """The model the request names: the served one, with or without its tag; any other is a 404."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise bad_request("model is required: name the served model, as GET /api/tags lists it")
    if name not in (model_id, served_name(model_id)):
        raise APIError(404, f'model "{name}" not found; this server serves "{served_name(model_id)}"')
    return name


def chat_call(body: dict, settings: ServeSettings, model_id: str, deadline: float | None = None) -> OllamaCall:
    """POST /api/chat."""
    name = check_model(body, model_id)
    stream = _flag(body, "stream", True)
    _refuse_unsupported(body, ("tools",), "tools are not supported by this model")
    _refuse_unsupported(body, ("think",), "thinking is not supported by this model")
    messages = body.get("messages")
    if messages is None or messages == []:
        return OllamaCall(name, stream, None)
    if not isinstance(messages, list):
        raise bad_request("messages must be an array of {role, content, images} objects")
    openai_messages = [_message(message, index) for index, message in enumerate(messages)]
    return OllamaCall(name, stream, _checked(body, openai_messages, settings, deadline))


def generate_call(body: dict, settings: ServeSettings, model_id: str, deadline: float | None = None) -> OllamaCall:
    """POST /api/generate: one prompt, its images and a system prompt, without a conversation."""
    name = check_model(body, model_id)
    stream = _flag(body, "stream", True)
    for field, why in (
        ("raw", "raw prompts are not supported: send the prompt, the chat template is applied"),
        ("suffix", "suffix (fill in the middle) is not supported by this model"),
        ("template", "template is not supported: the model's own chat template is used"),
        ("context", "context is not supported: continue a conversation through POST /api/chat"),
        ("think", "thinking is not supported by this model"),
    ):
        _refuse_unsupported(body, (field,), why)
    prompt = body.get("prompt")
    images = body.get("images")
    if prompt is not None and not isinstance(prompt, str):
        raise bad_request("prompt must be a string")
    if not prompt and not images:
        return OllamaCall(name, stream, None)
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise bad_request("system must be a string")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append(_message({"role": "user", "content": prompt or "", "images": images}, 0))
    return OllamaCall(name, stream, _checked(body, messages, settings, deadline))


# --- the OpenAI body it means --------------------------------------------------------------


def _message(message, index: int) -> dict:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise bad_request(f"{where} must be an object with role and content")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise bad_request(f"{where}.content must be a string")
    images = message.get("images") or []
    if not isinstance(images, list) or not all(isinstance(image, str) and image for image in images):
        raise bad_request(f"{where}.images must be an array of base64-encoded images")
    if message.get("tool_calls"):
        raise bad_request(f"{where}: tool calls are not supported by this model")
    # ollama places a message's images before its words, as `smolcli ask` does
    parts = [{"type": "image_url", "image_url": {"url": _data_uri(image)}} for image in images]
    if content:
        parts.append({"type": "text", "text": content})
    return {"role": message.get("role"), "content": parts}


def _data_uri(image: str) -> str:
    # ollama's images are bare base64; a data: URI is taken as it is
    return image if image.startswith("data:") else "data:image/*;base64," + image


def _checked(body: dict, messages: list[dict], settings: ServeSettings, deadline: float | None) -> ChatRequest:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise bad_request("options must be an object")
    for name, neutral in NEUTRAL_OPTIONS.items():
        if options.get(name) is not None and _option_number(options, name) != neutral:
            raise bad_request(f"options.{name} is not supported: leave it at {neutral:g}")
    openai_body = {"messages": messages, "response_format": _response_format(body.get("format"))}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p")):
        if options.get(theirs) is not None:
            openai_body[ours] = _option_number(options, theirs)
    openai_body["seed"] = _option_integer(options, "seed")
    openai_body["max_tokens"] = _max_tokens(options, settings)
    openai_body["stop"] = _stop(options.get("stop"))
    request = chat_request(openai_body, settings, deadline)  # remote images fetched within the request's time
    top_k = _option_integer(options, "top_k")
    if top_k is not None and top_k < 0:
        raise bad_request(f"options.top_k must be 0 (off) or more, not {top_k}")
    num_ctx = _option_integer(options, "num_ctx")
    if num_ctx is not None and num_ctx < 1:
        raise bad_request(f"options.num_ctx must be at least 1, not {num_ctx}")
    top_k = request.top_k if top_k is None else top_k
    return dataclasses.replace(request, top_k=top_k, ctx=num_ctx, fields=OLLAMA_FIELDS)


def _max_tokens(options: dict, settings: ServeSettings) -> int | None:
    limit = settings.limits.max_tokens
    num_predict = _option_integer(options, "num_predict")
    if num_predict is None or num_predict in (-1, -2):  # ollama's "until the end" and "until the context is full"
        return None  # the server's limit
    if num_predict < 1:
        raise bad_request(f"options.num_predict must be at least 1, or -1 for no limit, not {num_predict}")
    if num_predict > limit:
        raise bad_request(
            f"options.num_predict is {num_predict}; this server allows at most {limit} (--max-tokens-limit)"
        )
    return num_predict


def _response_format(value) -> dict | None:
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": value}}
    raise bad_request(f'format must be "json" or a JSON schema object, not {value!r}')


def _stop(value) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad_request("options.stop must be a string or an array of strings")
    return stops


def _option_number(options: dict, name: str) -> float:
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"options.{name} must be a number, not {value!r}")
    return float(value)


def _option_integer(options: dict, name: str) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"options.{name} must be an integer, not {value!r}")
    return value


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false, not {value!r}")
    return value


def _refuse_unsupported(body: dict, fields: tuple[str, ...], why: str) -> None:
    for field in fields:
        if body.get(field):
            raise bad_request(why)
