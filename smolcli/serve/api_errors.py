"""Errors as the OpenAI API writes them: an HTTP status and {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from smolcli.errors import BadInput, ContextFull, MemoryPlanRefused, SmolcliError

# the library's settings that a request gives, by the request's name for them; the rest are the server's options
REQUEST_FIELDS = {
    **{name: name for name in ("max_tokens", "temperature", "top_p", "seed", "stop", "logprobs")},
    "images": "image_url",
    "system": "the system message",
    "json_schema": "response_format json_schema",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def too_large(message: str, param: str | None = None, code: str = "payload_too_large") -> APIError:
    return APIError(413, message, param=param, code=code)


def timed_out(message: str, headers: dict[str, str] | None = None) -> APIError:
    """408: the request, its headers or its body took longer than their limit."""
    return APIError(408, message, "timeout_error", code="request_timeout", headers=headers)


def request_timeout(timeout_s: float) -> APIError:
    return timed_out(f"the request took longer than the server's limit of {timeout_s:g} s (--timeout)")


def http_spelling(setting: str, value: str | None, fields: dict[str, str] = REQUEST_FIELDS) -> str:
    """A setting named in a library message: a request field by the request's name for it (`fields`: OpenAI's
    by default), a server option as its flag."""
    if setting in fields:
        return fields[setting] if value is None else f"{fields[setting]}={value}"
    flag = "--" + setting.replace("_", "-")
    return flag if value is None else f"{flag} {value}"


def from_library(error: SmolcliError, fields: dict[str, str] = REQUEST_FIELDS) -> APIError:
    """A library error met while answering: the request's fault (400) or the server's (500)."""
    message = error.text(lambda setting, value: http_spelling(setting, value, fields))
    if isinstance(error, ContextFull):
        return bad_request(message, param="messages", code="context_length_exceeded")
    if isinstance(error, (BadInput, MemoryPlanRefused)):
        return bad_request(message)
    return APIError(500, message, type="server_error")
