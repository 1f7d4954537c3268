"""Constrained answers: a JSON schema or a GBNF grammar held by llama.cpp's grammar sampler.

llama-cpp-python's schema converter (json_schema_to_gbnf) honours part of JSON Schema and
quietly ignores the rest (numeric bounds, oneOf's exclusivity, keywords next to $ref or anyOf,
...), so a schema is checked here first against what the converter really enforces, and
refused with the keyword and its place when it asks for more: an answer that parses but breaks
the schema is never passed on. Every answer is validated with jsonschema after generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from smolcli.errors import AnswerTruncated, BadInput, SmolcliError

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
    return BadInput(f"{{json_schema}} {pointer or '#'}: {problem}")


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


def _implied_kind(keys: set[str]) -> str | None:
    for kind, words in (("object", OBJECT_KEYWORDS), ("array", ARRAY_KEYWORDS), ("string", STRING_KEYWORDS)):
        if keys & (words - {"type"}):
            return kind
    return None


def _check_object(schema: dict, pointer: str, refs: dict) -> None:
    properties = schema.get("properties", {})
    missing = [name for name in schema.get("required", []) if name not in properties]
    if missing:
        raise _refuse(pointer, f"required {missing[0]!r} is not among the properties")
    for name, sub in properties.items():
        _check(sub, f"{pointer}/properties/{name}", refs)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        _check(extra, f"{pointer}/additionalProperties", refs)


def _check_array(schema: dict, pointer: str, refs: dict) -> None:
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


def _check_string(schema: dict, pointer: str, _refs: dict) -> None:
    given = {"pattern", "format", "minLength"} & set(schema) | ({"minLength"} if "maxLength" in schema else set())
    if len(given) > 1:
        raise _refuse(pointer, "a string can have one of pattern, format or minLength/maxLength")
    pattern = schema.get("pattern")
    if pattern is not None and not (pattern.startswith("^") and pattern.endswith("$")):
        raise _refuse(pointer, f"the pattern {pattern!r} must be anchored with ^ and $")
    form = schema.get("format")
    if form is not None and form not in STRING_FORMATS:
        raise _refuse(pointer, f"format {form!r} is not supported (only {', '.join(STRING_FORMATS)})")


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


def schema_constraint(schema) -> Constraint:
    """A JSON schema as a grammar, or a one-line error naming what the grammar could not enforce."""
    import jsonschema
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise BadInput(f"{{json_schema}} must be a JSON object, not {type(schema).__name__}")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        raise BadInput(f"{{json_schema}} is not a valid JSON Schema at #/{where}: {error.message}") from None
    refs = _local_refs(schema)
    _check(schema, "", refs)
    _check_no_cycle(refs)
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except (AssertionError, ValueError, KeyError) as error:
        raise BadInput(f"{{json_schema}} could not be turned into a grammar: {error}") from None
    gbnf = "\n".join(JSON_CHAR_RULE if line.startswith("char ::= ") else line for line in gbnf.splitlines())
    return Constraint(gbnf, schema)


def grammar_constraint(gbnf: str, source: str = "grammar") -> Constraint:
    if not gbnf.strip():
        raise BadInput(f"{{grammar}} {source} is empty")
    return Constraint(gbnf, None, source)


def read_schema(text_or_path: str) -> dict:
    """A schema given inline ('{"type": ...}') or as a file path."""
    text = text_or_path
    if not text_or_path.lstrip().startswith("{"):
        path = Path(text_or_path).expanduser()
        if not path.is_file():
            raise BadInput(f"{{json_schema}} {text_or_path}: neither inline JSON nor a schema file")
        text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInput(
            f"{{json_schema}} is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None


def read_grammar(path: str) -> Constraint:
    file = Path(path).expanduser()
    if not file.is_file():
        raise BadInput(f"{{grammar}} {path}: no such GBNF file")
    return grammar_constraint(file.read_text(encoding="utf-8"), str(file))


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
