"""GET /openapi.json: an OpenAPI 3.1 description of the routes this server has, written by hand.

It describes what chat_request.py accepts (the OpenAI fields implemented, the ones refused) so that
a client generator or a fuzzer (schemathesis) can be pointed at the server; the tests check that
the requests it describes are answered and that the server's answers match it.
"""

from __future__ import annotations

from functools import lru_cache

from smolcli.serve.chat_request import MAX_STOP_STRINGS, MAX_TOP_LOGPROBS, REFUSED_FIELDS

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_URL_PART = {"type": "object", "required": ["url"], "properties": {"url": {"type": "string", "minLength": 1}}}

_PART = {
    "oneOf": [
        {
            "type": "object",
            "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
        },
        {
            "type": "object",
            "required": ["type", "image_url"],
            "description": "a data: URI (base64), a file:// path under --allow-files, an http(s) URL with --allow-remote",
            "properties": {"type": {"const": "image_url"}, "image_url": {"oneOf": [_URL_PART, {"type": "string"}]}},
        },
        {
            "type": "object",
            "required": ["type", "video_url"],
            "description": "SmolVLM2: a data: URI (base64) or a file:// path under --allow-files",
            "properties": {"type": {"const": "video_url"}, "video_url": {"oneOf": [_URL_PART, {"type": "string"}]}},
        },
    ]
}

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "description": "system/developer messages first; then user and assistant turns, ending with a user's",
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "null"}, {"type": "array", "items": _PART}]},
    },
}

_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "description": "Unknown fields are ignored; the fields listed as refused are a 400 naming the field.",
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "max_tokens": {"type": "integer", "minimum": 1, "description": "at most --max-tokens-limit"},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "seed": {"type": "integer", "minimum": 0, "maximum": 0xFFFFFFFE},
        "stop": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "maxItems": MAX_STOP_STRINGS, "items": {"type": "string", "minLength": 1}},
            ]
        },
        "logprobs": {"type": "boolean"},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": MAX_TOP_LOGPROBS},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "response_format": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": ["text", "json_object", "json_schema"]},
                "json_schema": {"type": "object", "properties": {"name": {"type": "string"}, "schema": {}}},
            },
        },
        "ignore_eos": {"type": "boolean", "description": "llama.cpp's extension"},
        "n": {"const": 1},
        "frequency_penalty": {"const": 0},
        "presence_penalty": {"const": 0},
        **{name: {"not": {}, "description": "refused: not implemented"} for name in REFUSED_FIELDS},
    },
}

_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "object": {"const": "chat.completion"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "message": {
                        "type": "object",
                        "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
                    },
                    "finish_reason": {"enum": ["stop", "length"]},
                },
            },
        },
        "usage": {
            "type": "object",
            "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
            "properties": {
                name: {"type": "integer"} for name in ("prompt_tokens", "completion_tokens", "total_tokens")
            },
        },
    },
}


def _errors(*statuses: int) -> dict:
    described = {
        "400": "a field that is wrong, refused or too deep",
        "401": "missing or wrong API key",
        "403": "a file outside --allow-files, or a URL without --allow-remote",
        "408": "headers, body or answer past their time limit",
        "413": "a body or image over its limit",
        "503": "the queue is full, the model is loading or the server is stopping",
    }
    json_error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {str(s): {"description": described[str(s)], "content": json_error} for s in statuses}


@lru_cache(maxsize=1)
def openapi_description() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "smolcli serve", "version": "1", "description": "OpenAI-compatible chat completions"},
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "operationId": "createChatCompletion",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "the answer, or server-sent events when stream is true",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(400, 401, 403, 408, 413, 503),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "responses": {"200": {"description": "the one model served"}, **_errors(401)},
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "loading or failed"}},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "responses": {"200": {"description": "Prometheus text"}, **_errors(401)},
                }
            },
        },
        "components": {"schemas": {"ChatRequest": _REQUEST, "ChatCompletion": _COMPLETION, "Error": _ERROR}},
    }
