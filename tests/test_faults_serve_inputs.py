"""Odd values a client can send `smolcli serve` (the real server on loopback): each a 400 or 413 naming the thing,
never a 500 or a dead server. Schemas that crashed llama.cpp, huge image headers, odd file:// paths and URLs."""

from __future__ import annotations

import signal

import pytest
from test_serve import assert_error, data_uri, good_request, image_message, start_process

from smolcli.synthetic.images import png_claiming

PARAM = "messages[0].content[0].image_url"


@pytest.fixture(scope="module")
def served(tiny_pair, tmp_path_factory):
    home, allowed = tmp_path_factory.mktemp("serve-home"), tmp_path_factory.mktemp("allowed")
    log = home / "stderr.log"
    process, running = start_process(tiny_pair[0], home, log, "--allow-files", str(allowed))
    yield running, log, allowed, process
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        process.kill()


def _ask(server, body: dict):
    return server.request("POST", "/v1/chat/completions", body)


def _schema_body(schema) -> dict:
    return {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }


@pytest.mark.parametrize(
    "schema, words",
    [
        ({"type": "string", "maxLength": 100000}, ["/maxLength", "maxLength 100000"]),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 1000000}, ["/maxItems"]),
        ({"type": "string", "minLength": 5, "maxLength": 2}, ["/minLength"]),
        ({"enum": []}, ["/enum", "empty enum"]),
        ({"type": "string", "pattern": "^(a)\\1$"}, ["/pattern", "back-reference"]),
        ({"type": "object", "properties": {'a"b': {"type": "string"}}}, ["/properties", "quote"]),
        ({"type": "string", "maxLength": 10000}, ["/maxLength"]),
    ],
    ids=["maxLength", "maxItems", "min-above-max", "empty-enum", "back-reference", "quote", "maxLength-10000"],
)
def test_a_schema_that_crashed_the_server_is_400_naming_the_keyword(served, schema, words):
    server, log, *_ = served
    status, _, body = _ask(server, _schema_body(schema))
    error = assert_error(status, body, 400)
    for word in words:
        assert word in error["message"], (word, error)
    assert "grammar" not in error["message"] or "could not parse" not in error["message"], error
    good_request(server)
    assert "root ::=" not in log.read_text()  # llama.cpp's grammar dump never reaches the log


@pytest.mark.parametrize("side", [14_000, 20_000, 100_000])
def test_a_huge_png_header_is_413_not_not_an_image(served, tmp_path, side):
    server = served[0]
    png = png_claiming(tmp_path / f"huge-{side}.png", side, side)
    status, _, body = _ask(server, {"messages": [image_message(data_uri(png))]})
    error = assert_error(status, body, 413, "image_too_large", PARAM)
    assert "not an image" not in error["message"]
    good_request(server)


def test_odd_file_paths_are_400_in_one_line(served):
    server, log, allowed, _ = served
    (allowed / "loop-a").symlink_to(allowed / "loop-b")
    (allowed / "loop-b").symlink_to(allowed / "loop-a")
    long_name = allowed / ("n" * 300 + ".png")
    deep = allowed / "/".join(["d" * 200] * 25)
    for url, word in (
        ((allowed / "a").as_uri() + "%00b.png", "NUL"),
        ((allowed / "loop-a").as_uri(), "loop"),
        ("file://" + str(long_name), "too long"),
        ("file://" + str(deep) + "/x.png", ""),
    ):
        status, _, body = _ask(server, {"messages": [image_message(url)]})
        error = assert_error(status, body, 400, param=PARAM)
        assert word in error["message"] and "\n" not in error["message"], error
    good_request(server)
    assert "Traceback" not in log.read_text()


def test_a_url_with_crlf_is_400_and_one_with_a_space_is_refused_before_any_fetch(served):
    """CR/LF is refused in every URL and path; a space in an http(s) URL is refused by the fetcher under
    --allow-remote (tests/test_serve_limits.py), and here, without it, as a remote image."""
    server = served[0]
    status, _, body = _ask(server, {"messages": [image_message("http://example.com/a.png\r\nX-Injected: 1")]})
    assert_error(status, body, 400, "invalid_image_url", PARAM)
    status, _, body = _ask(server, {"messages": [image_message("http://example.com/a b.png")]})
    assert_error(status, body, 403, "remote_images_not_allowed", PARAM)
    good_request(server)


def test_the_server_is_still_the_same_process(served):
    """Nothing above ended it: a segfault would have, and good_request alone would not tell a restart."""
    server, log, _, process = served
    assert process.poll() is None, log.read_text()
    good_request(server)
    assert "Traceback" not in log.read_text() and "Segmentation" not in log.read_text()
