"""A request body as JSON, refused (400) before parsing when it nests too deep, and when a number is too long.

Python's json module recurses once per `[` or `{`: 100 000 of them end in a RecursionError, and
every later walk over the parsed body (schemas included) would recurse as deep. A 5000-digit integer
raises ValueError past Python's int limit. The depth is counted without recursing (util.json_limits), over the
structural characters only (a base64 image holds none), so a 32 MB body costs milliseconds.
"""

from __future__ import annotations

import json

from smolcli.serve.api_errors import bad_request
from smolcli.util.json_limits import text_depth

MAX_DEPTH = 64  # arrays and objects inside one another; a chat request with a schema needs about 20
MAX_NUMBER_DIGITS = 100  # an integer longer than this is no count, seed or bound anyone means


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise bad_request(
            f"the request body has a number of {len(text.lstrip('-'))} digits; at most {MAX_NUMBER_DIGITS} are read",
            code="invalid_json",
        )
    return int(text)


def parse_body(raw: bytes) -> dict:
    """The body as a JSON object; every way it can fail is a 400 naming the problem."""
    if text_depth(raw, stop_above=MAX_DEPTH) > MAX_DEPTH:
        raise bad_request(f"the request body nests arrays and objects more than {MAX_DEPTH} deep", code="json_too_deep")
    try:
        body = json.loads(raw, parse_int=_integer)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_request(f"the request body is not valid JSON ({error})", code="invalid_json") from None
    except (ValueError, RecursionError) as error:  # a float past the digit limit; a depth our count missed
        raise bad_request(f"the request body cannot be read as JSON ({error})", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    return body
