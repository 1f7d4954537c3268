"""Constrained answers: a JSON schema or a GBNF grammar held by llama.cpp's grammar sampler.

llama-cpp-python's schema converter (json_schema_to_gbnf) honours part of JSON Schema and
quietly ignores the rest (numeric bounds, oneOf's exclusivity, keywords next to $ref or anyOf,
...), so a schema is checked here first against what the converter really enforces, and
refused with the keyword and its place when it asks for more: an answer that parses but breaks
the schema is never passed on. Every answer is validated with jsonschema after generation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from smolcli.errors import AnswerTruncated, BadInput, SmolcliError
from smolcli.util.json_limits import loads, value_depth

# keywords that describe a schema and constrain nothing
ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly"}
)
CONTAINERS = frozenset({"$defs", "definitions"})  # hold schemas that $ref points at
PRIMITIVE_TYPES = ("string", "number", "integer", "boolean", "null", "object", "array")
# what each kind of schema may say, and the converter enforces exactly
OBJECT_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties"})
ARRAY_KEYWORDS = frozenset({"type", "items", "prefixItems", "minItems", "maxItems"})
STRING_KEYWORDS = frozenset({"type", "pattern", "minLength", "maxLength", "format"})
STRING_FORMATS = ("date", "time", "date-time", "uuid")
# keywords the converter looks at first: whatever stands beside them is ignored, so they must stand alone
ALONE = ("$ref", "anyOf", "enum", "const")
# JSON forbids raw control characters inside strings, which the converter's own rule lets through;
# and a \u escape must not name a lone surrogate, which no UTF-8 text (stdout, a file) can hold
HEX = "[0-9a-fA-F]"
JSON_CHAR_RULE = (
    r'char ::= [^"\\\x00-\x1F\x7F] | "\\" (["\\/bfnrt] | "u" '
    + f"([0-9a-cA-Ce-fE-F] {HEX} {HEX} {HEX} | [dD] [0-7] {HEX} {HEX}))"
)
# why a structured answer ended before its JSON did, by what cut it ({{...}}: a setting, kept for the error)
TRUNCATED = {
    "max_tokens": "the answer reached {{max_tokens}} ({max_tokens}) before its JSON ended; raise {{max_tokens}}",
    "ctx": "the context filled up before the answer's JSON ended; raise {{ctx}} or ask a shorter question",
    "stop": "a stop string cut the answer before its JSON ended; remove {{stop}}",
}
# What reaches llama.cpp is bounded. The schema converter spells a size bound as nested optional groups
# ("x{0,3}" becomes (x (x (x)?)?)?), and llama.cpp parses a grammar by recursive descent: past ~1500 levels it
# refuses, and somewhere between 10,000 and 20,000 nested parentheses (measured on the main thread) it overflows
# the C stack and takes the process with it; 1000 held on a thread with a 1 MiB stack.
# A bound above MAX_BOUND is refused rather than dropped from the grammar, so every answer still meets the
# schema exactly (an unbounded grammar with the bound checked afterwards would turn a long answer into an
# error after it was paid for). Leaving maxLength out is the way to ask for more: 1000 characters are already
# some 250 tokens of answer.
MAX_BOUND = 1000  # minLength, maxLength, minItems, maxItems
MAX_SCHEMA_DEPTH = 64  # nested objects and arrays in the schema document (jsonschema and the converter recurse)
MAX_SCHEMA_NODES = 20_000  # objects, arrays and values in the schema document
MAX_PROPERTIES = 256  # in one object: each optional one adds a rule that every later one chains through
MAX_GRAMMAR_NESTING = 1000  # parentheses inside parentheses in GBNF text (ours or a --grammar)
MAX_GRAMMAR_BYTES = 1 << 20  # GBNF text
# a back-reference (\1, \k<name>, (?P=name)) asks for a repeat the grammar cannot remember
BACK_REFERENCE = re.compile(r"(?<!\\)(?:\\\\)*\\(?:[1-9]|k<)|\(\?P=")
# characters the converter copies into a grammar literal without escaping them correctly
UNSPELLABLE = re.compile(r'["\\\x00-\x1f\x7f]')
CONTROL = re.compile("[\x00-\x1f\x7f]")
SURROGATE = re.compile("[\ud800-\udfff]")

HINTS = {
    "oneOf": "use anyOf (the grammar cannot enforce that exactly one alternative matches)",
    "allOf": "merge the parts into one schema",
}


@dataclass(frozen=True)
class Constraint:
    """What an answer must follow: a grammar, and the schema it came from (None for a plain GBNF grammar)."""

    gbnf: str
    schema: dict | None = None
    source: str = "json_schema"  # how errors name it


def _refuse(pointer: str, problem: str) -> BadInput:
    return BadInput(_one_line(f"{{json_schema}} {pointer or '#'}: {problem}"))


def _one_line(text: str) -> str:
    """Control characters (a newline in a property name) written as escapes: an error stays one line."""
    return CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def _check(schema, pointer: str, refs: dict[str, dict]) -> None:
    if isinstance(schema, bool):
        if not schema:
            raise _refuse(pointer, "false allows no value")
        return
    if not isinstance(schema, dict):
        raise _refuse(pointer, f"a schema must be an object, not {type(schema).__name__}")
    keys = set(schema) - ANNOTATIONS - CONTAINERS
    for name in CONTAINERS & set(schema):
        for key, sub in schema[name].items():
            _check(sub, f"{pointer}/{name}/{key}", refs)
    for alone in ALONE:
        if alone in keys:
            others = keys - {alone, "type"} if alone in ("enum", "const") else keys - {alone}
            if others:
                raise _refuse(pointer, f"{', '.join(sorted(others))} beside {alone!r} would be ignored")
            if alone == "$ref":
                _check_ref(schema["$ref"], pointer, refs)
            elif alone in ("enum", "const"):
                _check_literals(schema[alone], f"{pointer}/{alone}", alone)
            elif alone == "anyOf":
                for index, sub in enumerate(schema["anyOf"]):
                    _check(sub, f"{pointer}/anyOf/{index}", refs)
            return
    kind = schema.get("type")
    if isinstance(kind, list):
        if keys - {"type"} or not kind or any(k not in PRIMITIVE_TYPES for k in kind):
            raise _refuse(pointer, "a list of types can stand only alone, and only of the JSON types")
        return
    if kind is not None and kind not in PRIMITIVE_TYPES:
        raise _refuse(pointer, f"unknown type {kind!r}")
    if kind is None:
        kind = _implied_kind(keys)
    allowed = {"object": OBJECT_KEYWORDS, "array": ARRAY_KEYWORDS, "string": STRING_KEYWORDS}.get(kind, {"type"})
    unknown = sorted(keys - allowed)
    if unknown:
        hint = HINTS.get(unknown[0], f"the grammar cannot enforce it for this {kind or 'value'}; remove it")
        raise _refuse(pointer, f"{unknown[0]!r} is not supported: {hint}")
    {"object": _check_object, "array": _check_array, "string": _check_string}.get(kind, lambda *_: None)(
        schema, pointer, refs
    )


def _check_literals(value, pointer: str, keyword: str) -> None:
    if keyword == "enum" and isinstance(value, list) and not value:
        raise _refuse(pointer, "an empty enum allows no value; list at least one")
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str) and UNSPELLABLE.search(node):
            raise _refuse(
                pointer,
                f"{node!r} holds a quote, backslash or control character, which the grammar cannot spell;"
                f" change the {keyword}",
            )
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _check_size(schema) -> None:
    """Bounds checked before anything walks the schema recursively (jsonschema, our checks, the converter)."""
    if value_depth(schema, stop_above=MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise BadInput(f"{{json_schema}} nests objects and arrays more than {MAX_SCHEMA_DEPTH} deep; flatten it")
    count, stack = 0, [("", schema)]
    while stack:
        pointer, node = stack.pop()
        count += 1
        if count > MAX_SCHEMA_NODES:
            raise BadInput(f"{{json_schema}} has more than {MAX_SCHEMA_NODES:,} keys and values; make it smaller")
        if isinstance(node, str) and SURROGATE.search(node):
            raise _refuse(pointer, f"{node!r} holds a lone surrogate, which no UTF-8 text can; remove it")
        if isinstance(node, dict):
            for key, child in node.items():
                if SURROGATE.search(key):
                    raise _refuse(pointer, f"the key {key!r} holds a lone surrogate, which no UTF-8 text can")
                stack.append((f"{pointer}/{key}", child))
        elif isinstance(node, list):
            stack.extend((f"{pointer}/{index}", child) for index, child in enumerate(node))


def check_grammar_size(gbnf: str, what: str) -> None:
    """GBNF text llama.cpp can parse without overflowing its stack: bounded in bytes and in nested parentheses
    (quoted literals and character classes skipped)."""
    if len(gbnf) > MAX_GRAMMAR_BYTES:
        raise BadInput(f"{what} is {len(gbnf):,} characters of grammar, more than {MAX_GRAMMAR_BYTES:,}; simplify it")
    depth = deepest = 0
    quote = None  # the character that closes the literal or class we are in
    escaped = False
    for char in gbnf:
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char == '"':
            quote = '"'
        elif char == "[":
            quote = "]"
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
        elif char == "#":
            quote = "\n"  # a comment runs to the end of its line
    if deepest > MAX_GRAMMAR_NESTING:
        raise BadInput(
            f"{what} nests parentheses {deepest} deep, more than llama.cpp parses safely ({MAX_GRAMMAR_NESTING});"
            " use named rules instead"
        )


def _implied_kind(keys: set[str]) -> str | None:
    for kind, words in (("object", OBJECT_KEYWORDS), ("array", ARRAY_KEYWORDS), ("string", STRING_KEYWORDS)):
        if keys & (words - {"type"}):
            return kind
    return None


def _check_object(schema: dict, pointer: str, refs: dict) -> None:
    properties = schema.get("properties", {})
    if len(properties) > MAX_PROPERTIES:
        raise _refuse(
            f"{pointer}/properties",
            f"{len(properties)} properties in one object, more than the grammar takes ({MAX_PROPERTIES});"
            " group them into nested objects",
        )
    for name in properties:
        if UNSPELLABLE.search(name):
            raise _refuse(
                f"{pointer}/properties",
                f"the property name {name!r} holds a quote, backslash or control character, which the grammar"
                " cannot spell; rename it",
            )
    missing = [name for name in schema.get("required", []) if name not in properties]
    if missing:
        raise _refuse(pointer, f"required {missing[0]!r} is not among the properties")
    for name, sub in properties.items():
        _check(sub, f"{pointer}/properties/{name}", refs)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        _check(extra, f"{pointer}/additionalProperties", refs)


def _check_array(schema: dict, pointer: str, refs: dict) -> None:
    _check_bounds(schema, pointer, "minItems", "maxItems")
    items = schema.get("prefixItems", schema.get("items"))
    if isinstance(items, list) or "prefixItems" in schema:
        if {"minItems", "maxItems"} & set(schema) or ("prefixItems" in schema and "items" in schema):
            raise _refuse(pointer, "a tuple (prefixItems) can have neither items nor minItems/maxItems beside it")
        for index, sub in enumerate(items):
            _check(sub, f"{pointer}/prefixItems/{index}", refs)
    elif items is not None:
        _check(items, f"{pointer}/items", refs)
    elif {"minItems", "maxItems"} & set(schema):
        raise _refuse(pointer, "minItems/maxItems need an items schema")


def _number(value) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_bounds(schema: dict, pointer: str, low: str, high: str) -> None:
    for name in (low, high):
        value = schema.get(name)
        if value is not None and value > MAX_BOUND:
            raise _refuse(
                f"{pointer}/{name}",
                f"{name} {_number(value)} is above {MAX_BOUND}, the most the grammar can hold; use at most {MAX_BOUND}"
                f" or leave {name} out ({{max_tokens}} bounds an answer too)",
            )
    if schema.get(low) is not None and schema.get(high) is not None and schema[low] > schema[high]:
        raise _refuse(
            f"{pointer}/{low}",
            f"{low} {_number(schema[low])} is above {high} {_number(schema[high])}: nothing can match",
        )


def _check_string(schema: dict, pointer: str, _refs: dict) -> None:
    _check_bounds(schema, pointer, "minLength", "maxLength")
    given = {"pattern", "format", "minLength"} & set(schema) | ({"minLength"} if "maxLength" in schema else set())
    if len(given) > 1:
        raise _refuse(pointer, "a string can have one of pattern, format or minLength/maxLength")
    pattern = schema.get("pattern")
    if pattern is not None and not (pattern.startswith("^") and pattern.endswith("$")):
        raise _refuse(pointer, f"the pattern {pattern!r} must be anchored with ^ and $")
    if pattern is not None and BACK_REFERENCE.search(pattern):
        raise _refuse(
            f"{pointer}/pattern", "a back-reference in a pattern cannot be enforced by the grammar; remove it"
        )
    stray = stray_closing(pattern) if pattern is not None else None
    if stray is not None:
        raise _refuse(f"{pointer}/pattern", f"the pattern's {stray!r} closes nothing; escape it as '\\{stray}'")
    form = schema.get("format")
    if form is not None and form not in STRING_FORMATS:
        raise _refuse(pointer, f"format {form!r} is not supported (only {', '.join(STRING_FORMATS)})")


def stray_closing(pattern: str) -> str | None:
    """A ']' or '}' that closes no character class or quantifier, or None. llama-cpp-python's pattern converter
    never moves past one (an endless loop: a request's schema would hold the server's worker for good). The scan
    reads the pattern as the converter does: a backslash escapes one character, a class runs to its first
    unescaped ']', a quantifier to its first '}'."""
    at = 0
    while at < len(pattern):
        char = pattern[at]
        if char == "\\":
            at += 2
        elif char == "[":
            at += 1
            while at < len(pattern) and pattern[at] != "]":
                at += 2 if pattern[at] == "\\" else 1
            at += 1
        elif char == "{" and "}" in pattern[at:]:
            at = pattern.index("}", at) + 1
        elif char in "]}":
            return char
        else:
            at += 1
    return None


def _check_ref(ref, pointer: str, refs: dict) -> None:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise _refuse(pointer, f"only local references (#/...) can be followed, not {ref!r}")
    if ref not in refs:
        raise _refuse(pointer, f"the reference {ref} points at nothing")


def _local_refs(schema: dict) -> dict[str, dict]:
    """Every '#/...' reference in the schema, resolved to the sub-schema it names (left out when it names nothing)."""
    found: dict[str, dict] = {}
    for ref in _local_refs_inside(schema):
        if not ref.startswith("#/") or ref in found:
            continue
        target = schema
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        if target is not None:
            found[ref] = target
    return found


def _check_no_cycle(refs: dict[str, dict]) -> None:
    """A $ref that reaches itself again would make the grammar recurse without end: refused."""
    edges = {ref: set(_local_refs_inside(target)) for ref, target in refs.items()}
    for start in edges:
        seen, stack = set(), [start]
        while stack:
            for nxt in edges.get(stack.pop(), ()):
                if nxt == start:
                    raise _refuse(start, "this $ref refers back to itself (a cycle); unroll it to a fixed depth")
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)


def _local_refs_inside(node) -> list[str]:
    if isinstance(node, dict):
        inner = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return inner + [ref for value in node.values() for ref in _local_refs_inside(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _local_refs_inside(value)]
    return []


SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")  # keywords whose values are each a schema
SUBSCHEMA_LISTS = ("prefixItems", "anyOf")  # keywords holding a list of schemas


def _anything_spelled_out(schema):
    """The schema with every "anything" sub-schema (`true`, `{}`, annotations alone) spelled as the list of all
    JSON types, the one spelling llama-cpp-python's converter reads right everywhere: it stops on a bare `true`
    (AttributeError), on `"items": {}` (KeyError) and on annotations alone, and reads `{}` in prefixItems as
    "an object". The depth is bounded before this runs."""
    if schema is True or (isinstance(schema, dict) and not set(schema) - ANNOTATIONS):
        return {"type": list(PRIMITIVE_TYPES)}
    if not isinstance(schema, dict):
        return schema
    plain = dict(schema)
    for key, value in schema.items():
        if key in SUBSCHEMA_MAPS and isinstance(value, dict):
            plain[key] = {name: _anything_spelled_out(sub) for name, sub in value.items()}
        elif key in SUBSCHEMA_LISTS and isinstance(value, list):
            plain[key] = [_anything_spelled_out(sub) for sub in value]
        elif key == "items":
            spelled = [_anything_spelled_out(sub) for sub in value] if isinstance(value, list) else None
            plain[key] = spelled if spelled is not None else _anything_spelled_out(value)
    return plain


def schema_constraint(schema) -> Constraint:
    """A JSON schema as a grammar, or a one-line error naming what the grammar could not enforce."""
    import jsonschema
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise BadInput(f"{{json_schema}} must be a JSON object, not {type(schema).__name__}")
    _check_size(schema)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        raise BadInput(_one_line(f"{{json_schema}} is not a valid JSON Schema at #/{where}: {error.message}")) from None
    refs = _local_refs(schema)
    _check(schema, "", refs)
    _check_no_cycle(refs)
    try:
        gbnf = json_schema_to_gbnf(json.dumps(_anything_spelled_out(schema)))
    except (AssertionError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise BadInput(_one_line(f"{{json_schema}} could not be turned into a grammar: {error}")) from None
    except RecursionError:  # the sizes above keep it away; kept so that no schema ends the process's caller
        raise BadInput("{json_schema} is too complex to turn into a grammar; simplify it") from None
    gbnf = "\n".join(JSON_CHAR_RULE if line.startswith("char ::= ") else line for line in gbnf.splitlines())
    check_grammar_size(gbnf, "the grammar of {json_schema}")
    return Constraint(gbnf, schema)


def grammar_constraint(gbnf: str, source: str = "grammar") -> Constraint:
    if not gbnf.strip():
        raise BadInput(f"{{grammar}} {source} is empty")
    if SURROGATE.search(gbnf):
        raise BadInput(f"{{grammar}} {source} holds a lone surrogate, which no UTF-8 text can; remove it")
    check_grammar_size(gbnf, f"{{grammar}} {source}")
    return Constraint(gbnf, None, source)


def read_schema(text_or_path: str) -> dict:
    """A schema given inline ('{"type": ...}') or as a file path."""
    text = text_or_path
    if not text_or_path.lstrip().startswith(("{", "[")):
        path = Path(text_or_path).expanduser()
        if not _is_file(path):
            shown = text_or_path if len(text_or_path) <= 200 else text_or_path[:200] + "..."
            raise BadInput(_one_line(f"{{json_schema}} {shown}: neither inline JSON nor a schema file"))
        text = _read_text(path, "{json_schema}")
    return loads(text, "{json_schema}")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system
        return False


def _read_text(path: Path, what: str) -> str:
    """A schema or grammar file, at most MAX_GRAMMAR_BYTES and UTF-8."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_GRAMMAR_BYTES + 1)
    except OSError as error:
        raise BadInput(f"{what} {path}: could not read it ({error.strerror or error})") from None
    if len(data) > MAX_GRAMMAR_BYTES:
        raise BadInput(f"{what} {path}: more than {MAX_GRAMMAR_BYTES:,} bytes; a schema or grammar is smaller")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{what} {path}: not UTF-8 text") from None


def read_grammar(path: str) -> Constraint:
    file = Path(path).expanduser()
    if not _is_file(file):
        shown = path if len(path) <= 200 else path[:200] + "..."
        raise BadInput(_one_line(f"{{grammar}} {shown}: no such GBNF file"))
    return grammar_constraint(_read_text(file, "{grammar}"), str(file))


def parsed_answer(text: str, constraint: Constraint, cut_by: str | None, max_tokens: int):
    """The answer's JSON value, checked against the schema; truncation is said as such, never passed on.

    `cut_by` names the setting that ended the answer before the model did ("max_tokens", "ctx",
    "stop"), or is None when the model ended it: the error blames only what really cut it.
    """
    if constraint.schema is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        if cut_by is None:
            # the grammar ends only on a whole JSON value: a sampler or grammar fault, not the user's settings
            raise SmolcliError(
                f"the answer ended but is not valid JSON ({error.msg} at character {error.pos}) though the grammar"
                " should make that impossible; please report this schema"
            ) from None
        raise AnswerTruncated(
            TRUNCATED[cut_by].format(max_tokens=max_tokens), partial_text=text, setting=cut_by
        ) from None
    import jsonschema

    try:
        jsonschema.validate(value, constraint.schema)
    except jsonschema.ValidationError as error:
        # the grammar should make this impossible: say so rather than pass a wrong value on
        raise SmolcliError(
            f"the answer does not match the schema ({error.message}); please report this schema"
        ) from None
    return value
