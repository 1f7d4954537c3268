"""Structured answers: JSON schemas and GBNF grammars through llama.cpp's grammar sampler.

Random weights are the hardest case for a grammar (the model wants nothing in particular), so
every schema here is run on the tiny random model and its answers must parse and validate.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from typer.testing import CliRunner

import smolcli
from smolcli.cli.app import app

from cli_checks import one_line_error

SCHEMAS = {
    "object": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 10},
            "count": {"type": "integer"},
            "price": {"type": "number"},
            "ok": {"type": "boolean"},
            "note": {"type": "null"},
        },
        "required": ["name", "count", "price", "ok", "note"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1, "maxItems": 3},
            "kind": {"enum": ["receipt", "invoice", "other"]},
        },
        "required": ["items", "kind"],
        "$defs": {
            "item": {
                "type": "object",
                "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"}, "qty": {"type": "integer"}},
                "required": ["sku", "qty"],
            }
        },
    },
    "choice": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "boolean"}, "maxItems": 4}]},
    "tuple": {"type": "array", "prefixItems": [{"const": "date"}, {"type": "string", "format": "date"}]},
    "enum": {"enum": ["cat", "dog", 3, None]},
}


@pytest.fixture(scope="module")
def model(tiny_pair):
    with smolcli.load(tiny_pair[0], threads=1) as loaded:
        yield loaded


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.mark.parametrize("name", SCHEMAS)
def test_answers_of_the_random_model_validate(model, images, name):
    schema = SCHEMAS[name]
    for prompt, pictures in (("Describe it.", [images["photo"]]), ("List what you see.", []), ("x", [images["tall"]])):
        answer = model.ask(prompt, images=pictures, json_schema=schema, max_tokens=300)
        assert answer.finish_reason == "stop", answer.text
        jsonschema.validate(json.loads(answer.text), schema)
        assert answer.json == json.loads(answer.text)


def test_sampling_with_a_schema_still_validates(model):
    schema = SCHEMAS["nested"]
    values = []
    for seed in range(4):
        answer = model.ask("Read the receipt.", json_schema=schema, temperature=1.0, seed=seed, max_tokens=300)
        jsonschema.validate(answer.json, schema)
        values.append(json.dumps(answer.json))
    assert len(set(values)) > 1  # the grammar narrows the choice; it does not fix the answer


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "integer", "minimum": 0}, ["'minimum'", "#"]),
        (
            {"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}}},
            ["'oneOf'", "/properties/a", "anyOf"],
        ),
        ({"$ref": "#/$defs/a", "$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/a"}}}}, ["cycle"]),
        ({"type": "string", "format": "email"}, ["format 'email'"]),
        ({"type": "string", "pattern": "[0-9]+"}, ["anchored"]),
        ({"$ref": "#/$defs/missing"}, ["points at nothing"]),
        ({"$ref": "https://example.com/schema.json"}, ["only local references"]),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, ["required 'b'"]),
        ({"anyOf": [{"type": "string"}], "properties": {"a": {}}}, ["beside 'anyOf'"]),
        ({"type": "nope"}, ["not a valid JSON Schema"]),
    ],
)
def test_a_schema_the_grammar_cannot_hold_is_refused_before_loading(tiny_pair, schema, words, monkeypatch):
    import smolcli.api.model

    monkeypatch.setattr(smolcli.api.model, "Engine", lambda *a, **k: pytest.fail("the model was loaded"))
    result = run("ask", "-m", str(tiny_pair[0]), "--json-schema", json.dumps(schema), "hi")
    one_line_error(result, "--json-schema", *words)
    with pytest.raises(smolcli.BadInput, match="json_schema="):
        smolcli.api.model.Model.open(tiny_pair[0]).ask("hi", json_schema=schema)


def test_an_answer_cut_by_max_tokens_is_reported_not_passed_on(tiny_pair, model):
    schema = SCHEMAS["object"]
    with pytest.raises(smolcli.AnswerTruncated, match=r"max_tokens= \(4\)") as cut:
        model.ask("Describe it.", json_schema=schema, max_tokens=4)
    assert cut.value.partial_text.startswith("{")
    result = run("ask", "-m", str(tiny_pair[0]), "-t", "1", "-n", "4", "--json-schema", json.dumps(schema), "hi")
    one_line_error(result, "--max-tokens (4)", "before its JSON ended")


def test_ask_json_carries_the_parsed_value_and_a_schema_file_works(tiny_pair, tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMAS["nested"]))
    result = run("ask", "-m", str(tiny_pair[0]), "-t", "1", "--json-schema", str(path), "--json", "Read it.")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["json"] == json.loads(report["text"])
    jsonschema.validate(report["json"], SCHEMAS["nested"])
    plain = run("ask", "-m", str(tiny_pair[0]), "-t", "1", "--json-schema", str(path), "Read it.")
    assert json.loads(plain.stdout) == report["json"]  # stdout is exactly the JSON value, newline ended


def test_bad_schema_text_is_one_line(tiny_pair, tmp_path):
    one_line_error(run("ask", "-m", str(tiny_pair[0]), "--json-schema", "{not json", "hi"), "is not JSON", "line 1")
    missing = tmp_path / "nothing.json"
    one_line_error(run("ask", "-m", str(tiny_pair[0]), "--json-schema", str(missing), "hi"), str(missing))
    both = ("--json-schema", "{}", "--grammar", str(missing))
    one_line_error(run("ask", "-m", str(tiny_pair[0]), *both, "hi"), "--grammar", str(missing))


def test_a_gbnf_grammar_holds_the_answer(tiny_pair, tmp_path, model):
    grammar = tmp_path / "yes_no.gbnf"
    grammar.write_text('root ::= ("yes" | "no") " because " [a-z ]{3,20} "."\n')
    result = run("ask", "-m", str(tiny_pair[0]), "-t", "1", "--grammar", str(grammar), "Is it a cat?")
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"(yes|no) because [a-z ]{3,20}\.\n", result.stdout), result.stdout
    bad = tmp_path / "bad.gbnf"
    bad.write_text("root ::= (unclosed\n")
    with pytest.raises(smolcli.BadInput, match="could not parse the grammar="):
        model.ask("hi", grammar=bad.read_text())


def test_each_chat_turn_can_have_its_own_schema(model, images):
    with model.chat(max_tokens=200) as chat:
        first = chat.send("What is it?", images=[images["square"]], json_schema=SCHEMAS["enum"])
        second = chat.send("And now?")  # unconstrained
        third = chat.send("Count them.", json_schema=SCHEMAS["choice"])
    assert first.json in SCHEMAS["enum"]["enum"]
    assert second.json is None
    jsonschema.validate(third.json, SCHEMAS["choice"])


def test_the_utf8_guard_lets_only_a_started_character_continue():
    import numpy as np

    from smolcli.runtime.decoding.utf8_guard import Utf8Guard, Utf8Vocabulary

    pieces = [b"a", b"\xe4", b"\xb8\xad", b'"', b"\xb8", b"\xff", b"", b"\xe4\xb8"]
    guard = Utf8Guard(Utf8Vocabulary(pieces))
    logits = np.zeros(len(pieces), dtype=np.float32)
    guard.mask(logits)
    # at a character boundary: no stray continuation byte, no byte that is never UTF-8
    assert list(np.isfinite(logits)) == [True, True, False, True, False, False, True, True]
    guard.advance(b"\xe4")
    logits = np.zeros(len(pieces), dtype=np.float32)
    guard.mask(logits)
    # inside 中 (e4 b8 ad): only what continues it
    assert list(np.flatnonzero(np.isfinite(logits))) == [2, 4]
    guard.advance(b"\xb8")
    assert guard.pending == b"\xe4\xb8"
    guard.advance(b"\xad")
    assert guard.pending == b""


def test_string_lengths_hold_under_sampling(model):
    # a random byte-level model breaks UTF-8 freely: the guard is what keeps maxLength true in characters
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 6}, "b": {"type": "string", "maxLength": 12}},
        "required": ["a", "b"],
    }
    for seed in range(10):
        answer = model.ask(f"Say {seed}.", json_schema=schema, temperature=1.2, seed=seed, max_tokens=200)
        assert "\ufffd" not in answer.text
        jsonschema.validate(answer.json, schema)


def test_the_utf8_guard_never_lets_a_character_start_that_cannot_be_finished():
    import numpy as np

    from smolcli.runtime.decoding.utf8_guard import Utf8Guard, Utf8Vocabulary, unfinished_character

    # every 1- and 2-byte string, against what Python's encoder writes for every code point UTF-8 can hold
    encodings = [chr(c).encode() for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    whole = {e for e in encodings if len(e) == 1}
    starts = {e[:size] for e in encodings for size in (1, 2) if len(e) >= size}
    for size in (1, 2):
        for number in range(256**size):
            data = number.to_bytes(size, "big")
            can_go_on = data in starts or (data[:1] in whole and data[1:] in starts)
            assert (unfinished_character(data) is not None) == can_go_on, data
    # Python's incremental decoder keeps a truncated surrogate (ED A0..BF) as unfinished; no byte can finish it
    assert unfinished_character(b"\xed\xa7") is None and unfinished_character(b"\xed\x9f") == b"\xed\x9f"
    assert unfinished_character(b"a\xf4\x8f\xbf") == b"\xf4\x8f\xbf" and unfinished_character(b"\xf4\x90") is None
    pieces = [b"\xed", b"\xa7", b"\x9f", b"\x9f\xbf", b"\xa7\x80", b"\xbf"]
    guard = Utf8Guard(Utf8Vocabulary(pieces))
    guard.advance(b"\xed")
    logits = np.zeros(len(pieces), dtype=np.float32)
    guard.mask(logits)
    # inside ED..: only 80..9F may follow (ED 9F BF is U+D7FF, the last before the surrogates)
    assert list(np.flatnonzero(np.isfinite(logits))) == [2, 3]
    assert guard.allows(3) and not guard.allows(1)


def test_the_guards_mask_inside_a_character_is_the_byte_by_byte_rule():
    import numpy as np

    from smolcli.runtime.decoding.utf8_guard import Utf8Vocabulary, unfinished_character

    # the mask is computed from per-token tables; it must allow exactly what checking the bytes allows
    rng = np.random.default_rng(0)
    pieces = [bytes([b]) for b in range(256)] + [b""]
    pieces += [bytes(rng.integers(0x80, 0xC0, 1)) + bytes(rng.integers(0, 256, n)) for n in rng.integers(1, 5, 3000)]
    pieces += [b"\x80\x80" + "é中😀".encode()[:n] for n in range(10)]
    vocabulary = Utf8Vocabulary(pieces)
    pendings = [bytes([lead]) for lead in range(0xC2, 0xF5)]
    pendings += [b"\xe0\xa0", b"\xe0\xbf", b"\xed\x80", b"\xed\x9f", b"\xef\xbf", b"\xf0\x90", b"\xf4\x8f"]
    pendings += [b"\xf0\x90\x80", b"\xf4\x8f\xbf", b"\xf3\xbf\xbf"]
    for pending in pendings:
        expected = [t for t, piece in enumerate(pieces) if piece and unfinished_character(pending + piece) is not None]
        assert list(vocabulary.continuing(pending)) == expected, pending


@pytest.mark.parametrize("weights_seed", [1, 2])
def test_structured_answers_are_whole_utf8_for_any_weights_and_draw(seeded_pair, weights_seed):
    # On these weights answers once reached a truncated surrogate (ED A7): the guard took it for an
    # unfinished character and masked every token after it, the sampler drew ESC anyway, and the
    # JSON broke (the error then blamed a stop string). A bounded sweep of draws on named weights.
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 6}, "b": {"type": "string", "maxLength": 12}},
        "required": ["a", "b"],
    }
    with smolcli.load(seeded_pair(weights_seed)[0], threads=1) as model:
        for temperature in (0.7, 1.2, 2.0, 5.0):
            for seed in range(25):
                answer = model.ask(f"Say {seed}.", json_schema=schema, temperature=temperature, seed=seed)
                raw = b"".join(model.engine.piece(token) for token in answer.tokens)
                assert raw.decode("utf-8").removeprefix(" ") == answer.text  # strict: every byte valid
                assert answer.finish_reason == "stop", answer.text
                jsonschema.validate(answer.json, schema)  # maxLength counted in characters


def test_a_grammar_asking_for_what_utf8_cannot_hold_is_an_error_not_a_crash(tiny_pair, model, tmp_path):
    # a surrogate is a code point no UTF-8 text holds: the grammar and the guard leave no token, and
    # llama.cpp, handed one anyway, aborted the whole process (greedy or sampled)
    surrogates = 'root ::= [\\uD800-\\uDFFF] "."\n'
    for temperature in (0.0, 1.0):
        with pytest.raises(smolcli.SmolcliError, match=r"valid UTF-8 .* change the grammar="):
            model.ask("hi", grammar=surrogates, temperature=temperature, seed=0, max_tokens=5)
    assert model.ask("hi", grammar='root ::= "ok"\n').text == "ok"  # the model goes on answering
    path = tmp_path / "surrogates.gbnf"
    path.write_text(surrogates)
    one_line_error(run("ask", "-m", str(tiny_pair[0]), "-t", "1", "--grammar", str(path), "hi"), "--grammar", "UTF-8")


def test_a_structured_answer_that_does_not_parse_blames_only_what_cut_it(model):
    from smolcli.runtime.decoding.grammar import parsed_answer, schema_constraint

    with pytest.raises(smolcli.AnswerTruncated, match=r"a stop string cut .* remove stop=") as cut:
        model.ask("Describe it.", json_schema=SCHEMAS["object"], stop=['"'], max_tokens=300)
    assert cut.value.partial_text.startswith("{") and '"' not in cut.value.partial_text
    constraint = schema_constraint(SCHEMAS["object"])
    with pytest.raises(smolcli.AnswerTruncated, match=r"context filled up .* raise ctx="):
        parsed_answer('{"name": "ab', constraint, "ctx", 300)
    # the model ended it and it still does not parse: nothing the user set is to blame
    with pytest.raises(smolcli.SmolcliError, match=r"ended but is not valid JSON \(Invalid control character") as bad:
        parsed_answer('{"name": "a\x1bb"}', constraint, None, 300)
    assert not isinstance(bad.value, smolcli.AnswerTruncated) and "stop" not in str(bad.value)
