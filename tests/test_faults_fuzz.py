"""Bounded fuzzing (hypothesis): the schema checker, the JSON reader, the image and GGUF header readers.

Whatever they are given, they answer with a value or with our one-line error: never another exception, never
RecursionError, never a crash inside llama.cpp (a schema the checker accepts is handed to llama.cpp's grammar
parser here too). Each test has a fixed number of examples and a deadline, so the file stays under ~30 s.
"""

from __future__ import annotations

import struct
import zlib

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from smolcli.errors import BadInput, SmolcliError  # noqa: E402
from smolcli.runtime.decoding.grammar import grammar_constraint, schema_constraint  # noqa: E402
from smolcli.runtime.gguf.gguf_file import read_gguf  # noqa: E402
from smolcli.runtime.vision.images import image_from  # noqa: E402
from smolcli.util.json_limits import loads  # noqa: E402

FUZZ = settings(max_examples=150, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

KEYWORDS = (
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "minLength", "maxLength", "pattern", "format", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "minimum",
)  # fmt: skip
TYPES = st.sampled_from(["string", "number", "integer", "boolean", "null", "object", "array", "nope"])
TEXT = st.text(alphabet=st.characters(codec="utf-16", exclude_categories=()), max_size=12)  # surrogates included
NUMBERS = st.one_of(
    st.integers(-5, 5), st.integers(0, 10**7), st.floats(allow_nan=False), st.just(10**50), st.booleans()
)


def _schemas():
    leaf = st.one_of(
        st.fixed_dictionaries({"type": TYPES}),
        st.booleans(),
        st.fixed_dictionaries({"type": st.just("string"), "maxLength": NUMBERS}),
        st.fixed_dictionaries({"type": st.just("string"), "pattern": TEXT.map(lambda t: f"^{t}$")}),
        st.fixed_dictionaries({"enum": st.lists(st.one_of(TEXT, NUMBERS), max_size=4)}),
        st.fixed_dictionaries({"const": TEXT}),
        st.fixed_dictionaries({"$ref": st.sampled_from(["#/$defs/a", "#/nowhere", "http://x", "#"])}),
    )

    def extend(children):
        value = st.one_of(
            children, NUMBERS, TEXT, st.lists(children, max_size=3), st.dictionaries(TEXT, children, max_size=4)
        )
        return st.one_of(
            st.dictionaries(st.sampled_from(KEYWORDS), value, max_size=5),
            st.fixed_dictionaries(
                {"type": st.just("object"), "properties": st.dictionaries(TEXT, children, max_size=5)},
                optional={"required": st.lists(TEXT, max_size=3), "additionalProperties": children},
            ),
            st.fixed_dictionaries(
                {"type": st.just("array"), "items": children},
                optional={"minItems": NUMBERS, "maxItems": NUMBERS},
            ),
            st.fixed_dictionaries({"anyOf": st.lists(children, max_size=3)}),
        )

    return st.recursive(leaf, extend, max_leaves=25)


@pytest.fixture(scope="module")
def vocab(tiny_pair):
    """The tiny model's vocabulary alone (llama.cpp's vocab_only load): enough for its grammar parser."""
    import llama_cpp

    from smolcli.runtime.llama import llama_logging

    llama_logging.configure(verbose=False)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(tiny_pair[0]).encode(), params)
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


def test_the_schema_checker_answers_a_grammar_or_one_line(vocab):
    from smolcli.runtime.decoding.sampling import Sampler, SamplingOptions

    @settings(FUZZ, max_examples=400)
    @given(_schemas())
    def check(schema):
        try:
            constraint = schema_constraint(schema if isinstance(schema, dict) else {"type": "string"})
        except BadInput as error:
            assert "\n" not in str(error)
            return
        try:  # what we accept must not crash llama.cpp's parser; a parse it refuses is still one line
            Sampler(SamplingOptions(), constraint.gbnf, vocab).close()
        except BadInput as error:
            assert "\n" not in str(error)

    check()


@FUZZ
@given(st.text(alphabet='()[]"\\ab|*+?:=#\n -', max_size=400), st.integers(0, 3000))
def test_grammar_text_is_checked_without_recursion(text, depth):
    try:
        grammar_constraint("root ::= " + "(" * depth + text + ")" * depth)
    except BadInput as error:
        assert "\n" not in str(error)


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(alphabet='[]{}"\\:,0123456789.e-', max_size=300)))
def test_json_text_is_a_value_or_one_line(text):
    try:
        loads(text, "the body", max_depth=20)
    except BadInput as error:
        assert "\n" not in str(error)


def _png(width: int, height: int, tail: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + tail


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(_png, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.binary(max_size=100)),
        st.binary(max_size=100).map(lambda tail: b"GIF89a" + tail),
        st.binary(max_size=100).map(lambda tail: b"\xff\xd8\xff\xe0" + tail),
    )
)
def test_image_bytes_are_an_image_or_one_line(data):
    try:
        image_from(data)
    except BadInput as error:
        assert "\n" not in str(error)


@settings(max_examples=150, deadline=2000, derandomize=True)
@given(st.binary(max_size=300), st.sampled_from([b"", struct.pack("<I", 3), struct.pack("<IQQ", 3, 1, 2)]))
def test_gguf_headers_of_junk_are_one_line(tmp_path_factory, junk, start):
    path = tmp_path_factory.mktemp("gguf") / "junk.gguf"
    path.write_bytes(b"GGUF" + start + junk)
    try:
        read_gguf(path)
    except SmolcliError as error:
        assert "\n" not in str(error)
