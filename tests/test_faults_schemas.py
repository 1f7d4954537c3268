"""Schemas and grammars that used to crash llama.cpp or Python: refused by keyword and JSON pointer, in one line.

A size bound is spelled by the schema converter as nested groups, and llama.cpp parses a grammar by recursive
descent: maxLength 100000 or 100k nested parentheses overflowed the C stack and ended the whole process (a
segfault, so these run in a real subprocess). Deep or wide schemas hit Python's recursion limit.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from faults import error_line, smolcli

import smolcli as library
from smolcli.errors import AnswerTruncated, BadInput
from smolcli.runtime.decoding.grammar import (
    MAX_BOUND,
    MAX_PROPERTIES,
    grammar_constraint,
    schema_constraint,
)
from smolcli.util.json_limits import TooDeep, check_depth, loads


def _nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.parametrize(
    "schema, words",
    [
        ({"type": "string", "maxLength": 100000}, ["/maxLength", "maxLength 100000", f"at most {MAX_BOUND}"]),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 1e6}, ["/maxItems", "maxItems 1000000"]),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 5000}, ["/minItems"]),
        ({"type": "string", "minLength": 5, "maxLength": 2}, ["/minLength", "minLength 5 is above maxLength 2"]),
        ({"type": "array", "items": {}, "minItems": 3, "maxItems": 1}, ["/minItems", "above maxItems 1"]),
        ({"enum": []}, ["/enum", "empty enum"]),
        ({"type": "string", "pattern": "^(a)\\1$"}, ["/pattern", "back-reference"]),
        ({"type": "string", "pattern": "^(?P<x>a)(?P=x)$"}, ["/pattern", "back-reference"]),
        ({"type": "string", "pattern": "^\ud800$"}, ["/pattern", "lone surrogate"]),
        # llama-cpp-python's pattern converter looped forever on these (found by tests/test_faults_fuzz.py)
        ({"type": "string", "pattern": "^K}\u00af$"}, ["/pattern", "'}' closes nothing"]),
        ({"type": "string", "pattern": "^a{2}]$"}, ["/pattern", "']' closes nothing"]),
        ({"type": "object", "properties": {'a"b': {"type": "string"}}}, ["/properties", "quote"]),
        ({"type": "object", "properties": {"a\x00b": {"type": "string"}}}, ["/properties", "control character"]),
        ({"enum": ["fine", "new\nline"]}, ["/enum", "control character"]),
        ({"const": 'say "hi"'}, ["/const", "quote"]),
        (_nested(300), ["more than 64 deep"]),
        ({"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}}, ["3000 properties"]),
    ],
    ids=lambda value: json.dumps(value)[:40] if isinstance(value, dict) else None,
)
def test_a_schema_that_crashed_or_misled_is_refused_by_keyword_and_pointer(schema, words):
    with pytest.raises(BadInput) as refused:
        schema_constraint(schema)
    message = str(refused.value)
    assert message.startswith("json_schema=") and "\n" not in message, message
    for word in words:
        assert word in message, (word, message)


def test_large_bounds_end_in_one_line_not_a_segfault(tiny_pair, tmp_path):
    model = tiny_pair[0]
    error_line(
        smolcli("ask", "-m", model, "--json-schema", '{"type":"string","maxLength":100000}', "hi"),
        "--json-schema",
        "/maxLength",
        "maxLength 100000",
    )
    grammar = tmp_path / "deep.gbnf"
    grammar.write_text("root ::= " + "(" * 100_000 + '"a"' + ")" * 100_000 + "\n")
    error_line(smolcli("ask", "-m", model, "--grammar", grammar, "hi"), "--grammar", "100000 deep")
    # a schema of 100k nested [ and a 5000-digit number: read without recursion, refused by what they are
    error_line(smolcli("ask", "-m", model, "--json-schema", "[" * 100_000, "hi"), "--json-schema", "deep")
    error_line(
        smolcli("ask", "-m", model, "--json-schema", '{"maxLength": ' + "9" * 5000 + "}", "hi"),
        "--json-schema",
        "digits",
    )


def test_llama_cpps_grammar_dump_never_reaches_stderr(tiny_pair, tmp_path):
    bad = tmp_path / "bad.gbnf"
    bad.write_text("root ::= (unclosed\nother ::= " + " | ".join(f'"w{i}"' for i in range(200)) + "\n")
    done = smolcli("ask", "-m", tiny_pair[0], "--grammar", bad, "hi")
    line = error_line(done, "could not parse the --grammar", "expecting")
    assert "root ::=" not in done.stderr and "w199" not in done.stderr, done.stderr
    assert len(line) < 300


def test_bounds_at_the_limits_still_reach_llama_cpp_and_hold(tiny_pair):
    """What is accepted must really work in llama.cpp: the largest bounds and the widest object."""
    wide = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(MAX_PROPERTIES)}}
    schemas = [
        {"type": "string", "maxLength": MAX_BOUND},
        {"type": "array", "items": {"type": "string", "maxLength": MAX_BOUND}, "maxItems": MAX_BOUND},
        {"type": "string", "minLength": MAX_BOUND},
        wide,
    ]
    with library.load(tiny_pair[0]) as model:
        for schema in schemas:
            try:  # the grammar parsed in llama.cpp and held: a valid value, or one cut by max_tokens
                jsonschema.validate(model.ask("hi", json_schema=schema, max_tokens=4).json, schema)
            except AnswerTruncated as cut:
                assert cut.facts.get("setting") == "max_tokens", cut.facts
        answer = model.ask("hi", json_schema={"type": "string", "maxLength": 3}, max_tokens=20)
        assert len(answer.json) <= 3


def test_a_grammar_with_nesting_under_the_limit_still_works(tiny_pair):
    gbnf = "root ::= " + "(" * 200 + '"yes"' + ")" * 200 + "\n"
    with library.load(tiny_pair[0]) as model:
        assert model.ask("hi", grammar=gbnf, max_tokens=5).text == "yes"
    with pytest.raises(BadInput, match="lone surrogate"):
        grammar_constraint('root ::= "\ud800"')


def test_json_read_without_recursion_or_a_long_number_crash():
    with pytest.raises(BadInput, match="more than 100 deep"):
        loads("[" * 100_000, "the body")
    with pytest.raises(BadInput, match="digits"):
        loads('{"n": ' + "1" * 5000 + "}", "the body")
    with pytest.raises(BadInput, match="is not JSON"):
        loads("{nope", "the body")
    assert loads('{"a": "[[[[", "b": [1]}', "the body", max_depth=1 + 1) == {"a": "[[[[", "b": [1]}


def test_a_parsed_value_is_measured_without_recursion():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(TooDeep) as refused:
        check_depth(deep, 64)
    assert refused.value.limit == 64
    check_depth({"a": [{"b": [1, 2]}]}, 4)


def test_odd_schema_and_grammar_paths_are_one_short_line():
    from smolcli.runtime.decoding.grammar import read_grammar, read_schema
    from smolcli.runtime.vision.images import load_image

    for read in (read_schema, read_grammar):
        for text in ("x" * 100_000, "a\x00b", "a\nb"):
            with pytest.raises(BadInput) as refused:
                read(text)
            assert "\n" not in str(refused.value) and len(str(refused.value)) < 300, str(refused.value)[:300]
    with pytest.raises(BadInput, match="NUL"):
        load_image("/tmp/a\x00b.png")
