"""JSON from users, read within bounds: nesting checked before parsing, numbers too long refused, one-line errors.

Python's json module parses (and every later walk of the value recurses) one stack frame per level, so
100,000 nested `[` end in RecursionError; and an integer of more than 4300 digits is refused by int()
with a ValueError that is not a JSONDecodeError. Both are checked here without recursion, so a front end
(a schema option, a batch line, a request body) can answer with one line.
"""

from __future__ import annotations

import json
import re
import sys

from smolcli.errors import BadInput

MAX_DEPTH = 100  # nested objects and arrays in a document; a chat request needs about 6, a schema 64 at most
_DIGIT_LIMIT = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300


class TooDeep(ValueError):
    """A document nests its objects and arrays deeper than the limit."""

    def __init__(self, depth: int, limit: int):
        super().__init__(f"nests objects and arrays more than {limit} deep")
        self.depth, self.limit = depth, limit


# outside a JSON text's strings nesting changes only at these; inside one, a string ends at an unescaped "
_STRUCTURE = {bytes: re.compile(rb'[\[\]{}"\\]'), str: re.compile(r'[\[\]{}"\\]')}


def text_depth(text: str | bytes, stop_above: int | None = None) -> int:
    """How deep the objects and arrays of JSON text nest (strings skipped), without parsing it; stops counting
    once it is above `stop_above`. Only the structural characters are visited (a regular expression finds
    them), so a 32 MB request body of base64 images costs milliseconds."""
    if isinstance(text, bytearray):
        text = bytes(text)
    opening, closing, quote, backslash = (
        ("[{", "]}", '"', "\\") if isinstance(text, str) else (b"[{", b"]}", b'"', b"\\")
    )
    depth = deepest = 0
    in_string = False
    escaped_at = -1  # the position of the character a backslash escapes
    for match in _STRUCTURE[type(text)].finditer(text):
        at = match.start()
        if at == escaped_at:
            continue
        char = text[at : at + 1]
        if in_string:
            if char == backslash:
                escaped_at = at + 1
            elif char == quote:
                in_string = False
        elif char == quote:
            in_string = True
        elif char in opening:
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    return deepest
        elif char in closing:
            depth -= 1
    return deepest


def value_depth(value, stop_above: int | None = None) -> int:
    """How deep a parsed value's dicts and lists nest, walked without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if stop_above is not None and deepest > stop_above:
                return deepest
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def check_depth(value, limit: int) -> None:
    """TooDeep when a parsed value nests deeper than `limit`."""
    depth = value_depth(value, stop_above=limit)
    if depth > limit:
        raise TooDeep(depth, limit)


def loads(text: str | bytes, what: str, max_depth: int = MAX_DEPTH):
    """JSON text as a value, or BadInput naming `what` and the problem in one line (never RecursionError)."""
    if text_depth(text, stop_above=max_depth) > max_depth:
        raise BadInput(f"{what} nests objects and arrays more than {max_depth} deep; flatten it")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInput(f"{what} is not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{what} is not UTF-8 text") from None
    except RecursionError:  # depth is checked above; kept for a stack smaller than the default
        raise BadInput(f"{what} nests objects and arrays too deep; flatten it") from None
    except ValueError as error:
        if "digits" in str(error):
            raise BadInput(
                f"{what} holds a number with more than {_DIGIT_LIMIT} digits; no setting needs one that long"
            ) from None
        raise BadInput(f"{what} is not JSON: {error}") from None
