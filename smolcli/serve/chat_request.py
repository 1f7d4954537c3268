"""A POST /v1/chat/completions body, checked field by field, as what the library needs.

Every wrong field is a 400 naming it (OpenAI's `param`), so a client learns what to fix. Unknown
fields are ignored, as OpenAI clients send a few of their own; fields whose meaning we do not
implement (n > 1, tools, logit_bias, penalties) are refused rather than ignored.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from smolcli.models.smolvlm import IMAGE_MARKER
from smolcli.models.smolvlm_video import VIDEO_MARKER
from smolcli.runtime.vision.embedding_cache import image_digest
from smolcli.runtime.vision.images import RGBImage
from smolcli.serve.api_errors import REQUEST_FIELDS, bad_request
from smolcli.serve.image_input import image_from_url
from smolcli.serve.settings import ServeSettings
from smolcli.serve.video_input import video_from_url

MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20
# OpenAI fields whose meaning this server does not implement: a 400 naming the field, never silently ignored
REFUSED_FIELDS = ("tools", "functions", "tool_choice", "function_call", "audio", "logit_bias")
# an assistant message's fields beyond its content, dropped from the prompt if accepted
REFUSED_MESSAGE_FIELDS = ("tool_calls", "function_call", "audio")


@dataclass
class Turn:
    role: str  # "user" or "assistant"
    text: str  # user turns: one <image> marker where each image stands, a <video> marker where the clip does
    images: list[RGBImage] = field(default_factory=list)
    video: bytes | None = None  # a video_url part's clip, as sent

    def identity(self) -> tuple:
        """What a conversation's history is compared by: the words, the images' pixels and the clip's bytes."""
        clip = hashlib.sha256(self.video).hexdigest() if self.video is not None else None
        return (self.role, self.text, tuple(image_digest(i.width, i.height, i.pixels) for i in self.images), clip)


@dataclass
class ChatRequest:
    system: str | None
    history: list[Turn]  # the finished exchanges before the last message: user, assistant, user, ...
    last: Turn  # the user message to answer
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int = 40  # the library's default; only ollama's options set it
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None  # top alternatives per token, when logprobs were asked for
    stream: bool = False
    include_usage: bool = False
    json_schema: dict | None = None  # response_format json_schema, or {} for json_object (any JSON object)
    model: str | None = None
    ctx: int | None = None  # a new conversation's context size (ollama's num_ctx); None: sized by the library
    fields: dict[str, str] = field(default_factory=lambda: dict(REQUEST_FIELDS))  # settings' names in errors

    @property
    def n_images(self) -> int:
        return len(self.last.images) + sum(len(turn.images) for turn in self.history)

    def generation(self) -> dict:
        """The library's GenerationSettings fields."""
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "stop": self.stop,
            "ignore_eos": self.ignore_eos,
        }

    def exchanges(self) -> list[tuple]:
        """The history as Chat.replay's (user text, images, answer, video) entries."""
        return [(u.text, u.images, a.text, u.video) for u, a in zip(self.history[::2], self.history[1::2], strict=True)]


def chat_request(body: dict, settings: ServeSettings, deadline: float | None = None) -> ChatRequest:
    """The checked request; images are read and decoded here (call it off the event loop).

    deadline: the request's time.monotonic() limit, which remote image fetches count against.
    """
    limits = settings.limits
    for unsupported in REFUSED_FIELDS:
        if body.get(unsupported):  # an empty list or object asks for nothing
            raise bad_request(f"{unsupported} is not supported by this server", unsupported, "unsupported_parameter")
    n = _integer(body, "n", 1)
    if n != 1:
        raise bad_request("n must be 1: this server answers with one choice", "n", "unsupported_parameter")
    for penalty in ("frequency_penalty", "presence_penalty"):
        if _number(body, penalty, 0.0) != 0.0:
            raise bad_request(f"{penalty} is not supported: leave it at 0", penalty, "unsupported_parameter")

    max_tokens = _integer(body, "max_completion_tokens", None)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", None)
    param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    if max_tokens is None:
        max_tokens = limits.max_tokens
    if max_tokens < 1:
        raise bad_request(f"{param} must be at least 1, not {max_tokens}", param, "invalid_value")
    if max_tokens > limits.max_tokens:
        raise bad_request(
            f"{param} is {max_tokens}; this server allows at most {limits.max_tokens} (--max-tokens-limit)",
            param,
            "invalid_value",
        )
    temperature = _number(body, "temperature", 0.0)
    if not 0.0 <= temperature <= 2.0:
        raise bad_request(f"temperature must be between 0 and 2, not {temperature}", "temperature", "invalid_value")
    top_p = _number(body, "top_p", 1.0)
    if not 0.0 < top_p <= 1.0:
        raise bad_request(f"top_p must be in (0, 1], not {top_p}", "top_p", "invalid_value")
    seed = _integer(body, "seed", None)
    if seed is not None and not 0 <= seed < 0xFFFFFFFF:
        raise bad_request(f"seed must be between 0 and {0xFFFFFFFF - 1}, not {seed}", "seed", "invalid_value")

    logprobs = None
    if _boolean(body, "logprobs", False):
        logprobs = _integer(body, "top_logprobs", 0)
        if not 0 <= logprobs <= MAX_TOP_LOGPROBS:
            raise bad_request(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", "top_logprobs", "invalid_value")
    elif body.get("top_logprobs") is not None:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs", "invalid_value")

    stream = _boolean(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("stream_options must be an object", "stream_options", "invalid_type")
    include_usage = _boolean(options or {}, "include_usage", False, "stream_options.include_usage")

    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("model must be a string", "model", "invalid_type")
    system, turns = _messages(body.get("messages"), settings, deadline)
    return ChatRequest(
        system=system,
        history=turns[:-1],
        last=turns[-1],
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=_stop(body.get("stop")),
        ignore_eos=_boolean(body, "ignore_eos", False),
        logprobs=logprobs,
        stream=stream,
        include_usage=include_usage,
        json_schema=_response_format(body.get("response_format")),
        model=model,
    )


# --- fields ---------------------------------------------------------------------------------


def _integer(body: dict, name: str, default: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer, not {_kind(value)}", name, "invalid_type")
    return value


def _number(body: dict, name: str, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"{name} must be a number, not {_kind(value)}", name, "invalid_type")
    return float(value)


def _boolean(body: dict, name: str, default: bool, param: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"{param or name} must be true or false, not {_kind(value)}", param or name, "invalid_type")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), repr(value))


def _stop(value) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad_request("stop must be a string or an array of strings", "stop", "invalid_type")
    if len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"stop takes at most {MAX_STOP_STRINGS} strings", "stop", "invalid_value")
    if any(not s for s in stops):
        raise bad_request("stop strings must not be empty", "stop", "invalid_value")
    return tuple(stops)


def _response_format(value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise bad_request('response_format must be an object with a "type"', "response_format", "invalid_type")
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise bad_request(
                'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}',
                "response_format.json_schema",
                "invalid_type",
            )
        return spec.get("schema") or {"type": "object"}
    raise bad_request(
        f"response_format type {kind!r} is not one of text, json_object, json_schema",
        "response_format",
        "invalid_value",
    )


# --- messages -------------------------------------------------------------------------------


def _messages(messages, settings: ServeSettings, deadline: float | None) -> tuple[str | None, list[Turn]]:
    """The system prompt and the user/assistant turns, alternating, ending with the user message to answer."""
    limits = settings.limits
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty array", "messages", "invalid_type")
    if len(messages) > limits.max_messages:
        raise bad_request(
            f"{len(messages)} messages; this server takes at most {limits.max_messages} in one request",
            "messages",
            "too_many_messages",
        )
    n_images = sum(_count_images(m) for m in messages)
    if n_images > limits.max_images:
        raise bad_request(
            f"{n_images} images; this server takes at most {limits.max_images} in one request (--max-images)",
            "messages",
            "too_many_images",
        )
    system_parts: list[str] = []
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"{param} must be an object", param, "invalid_type")
        role = message.get("role")
        if role in ("system", "developer"):
            if turns:
                raise bad_request(f"{param}: a system message must come before the conversation", param)
            text, images, _ = _content(message.get("content"), param, settings, False, deadline)
            system_parts.append(text)
            continue
        if role not in ("user", "assistant"):
            raise bad_request(
                f"{param}.role must be system, user or assistant, not {role!r}", f"{param}.role", "invalid_value"
            )
        for refused in REFUSED_MESSAGE_FIELDS:
            if message.get(refused):
                raise bad_request(
                    f"{param}.{refused} is not supported by this server: send the assistant's text as content",
                    f"{param}.{refused}",
                    "unsupported_parameter",
                )
        text, images, video = _content(message.get("content"), param, settings, role == "user", deadline)
        if turns and turns[-1].role == role:
            # two user (or assistant) messages in a row read as one
            if video is not None and turns[-1].video is not None:
                raise bad_request(
                    f"{param}: one video per user turn; ask about the next clip in a turn of its own", param
                )
            turns[-1].text += "\n" + text
            turns[-1].images += images
            turns[-1].video = turns[-1].video if video is None else video
        elif not turns and role == "assistant":
            raise bad_request(f"{param}: the conversation must start with a user message", param)
        else:
            turns.append(Turn(role, text, images, video))
    if not turns or turns[-1].role != "user":
        raise bad_request("the last message must be the user's: it is what gets answered", "messages")
    if not turns[-1].text.strip() and not turns[-1].images and turns[-1].video is None:
        raise bad_request("the last user message is empty", "messages")
    return ("\n".join(system_parts) or None), turns


def _count_images(message) -> int:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")


def _content(
    content, param: str, settings: ServeSettings, allow_images: bool, deadline: float | None
) -> tuple[str, list[RGBImage], bytes | None]:
    """Text with one <image> marker where each image part stands and a <video> marker where the clip does,
    the images, and the clip."""
    if isinstance(content, str):
        return _plain(content, param), [], None
    if content is None:
        return "", [], None
    if not isinstance(content, list):
        raise bad_request(f"{param}.content must be a string or an array of parts", f"{param}.content", "invalid_type")
    text, images, video = "", [], None
    for index, part in enumerate(content):
        part_param = f"{param}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{part_param}.text must be a string", f"{part_param}.text", "invalid_type")
            joined = text and not text.endswith((IMAGE_MARKER, VIDEO_MARKER))
            text += ("\n" if joined else "") + _plain(part["text"], part_param)
        elif kind == "image_url":
            if not allow_images:
                raise bad_request(f"{part_param}: only user messages may carry images", part_param)
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, dict) else spec
            images.append(image_from_url(url, settings, f"{part_param}.image_url", deadline))
            text += IMAGE_MARKER
        elif kind == "video_url":
            if not allow_images:
                raise bad_request(f"{part_param}: only user messages may carry videos", part_param)
            if video is not None:
                raise bad_request(f"{part_param}: one video per message", part_param, "too_many_videos")
            spec = part.get("video_url")
            url = spec.get("url") if isinstance(spec, dict) else spec
            video, _ = video_from_url(url, settings, f"{part_param}.video_url")
            text += VIDEO_MARKER
        else:
            raise bad_request(
                f"{part_param} must be a text, image_url or video_url part, not {kind!r}",
                f"{part_param}.type",
                "invalid_value",
            )
    return text, images, video


def _plain(text: str, param: str) -> str:
    if IMAGE_MARKER in text:
        # the marker is how images are placed in the prompt: a literal one would misplace them
        raise bad_request(f"{param}: the text may not contain {IMAGE_MARKER}; send images as image_url parts", param)
    if VIDEO_MARKER in text:
        raise bad_request(f"{param}: the text may not contain {VIDEO_MARKER}; send a clip as a video_url part", param)
    return text
