"""`smolcli serve` against clients that stall, trickle, nest, point at slow URLs or send what is not implemented.

Each test runs the real server on 127.0.0.1 (in a thread with its limits shortened, or as the real
`smolcli serve` process), talks raw sockets where a client misbehaves below HTTP, and checks the
status, the one error object, and that a good request is answered after. Every loop is bounded.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import threading
import time
import zlib

import jsonschema
import pytest
import test_serve
from test_serve import Running, assert_error, good_request, image_message, start_process
from typer.testing import CliRunner

from smolcli.cli.app import app

from cli_checks import one_line_error

thread_server = test_serve.thread_server  # the fixture: the app under uvicorn in a thread, limits as a test needs
HELLO = {"messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 2}


# --- raw clients ------------------------------------------------------------------------------


def connect(server: Running) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=15)


def read_until_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection (bounded by `within` seconds), and when it closed."""
    started = time.monotonic()
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"the server held the connection past {within} s; it sent {received[:200]!r}") from None
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


def parse_response(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def stalled_body(server: Running, announced: int = 1000, sent: bytes = b'{"messages":') -> socket.socket:
    """A client that announces `announced` bytes of body and sends only the first few."""
    sock = connect(server)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {announced}\r\n\r\n".encode()
        + sent
    )
    return sock


# --- time bounds --------------------------------------------------------------------------------


def test_a_body_that_stops_arriving_is_408_and_the_connection_closed(thread_server):
    server = thread_server(body_timeout_s=1.0)
    sock = stalled_body(server)  # 12 bytes of 1000
    raw, took = read_until_closed(sock, within=10)
    status, body = parse_response(raw)
    error = assert_error(status, body, 408, "request_timeout")
    assert "1 s" in error["message"] and "\n" not in error["message"]
    assert 0.8 < took < 5, took
    good_request(server)


def test_slowloris_and_idle_connections_are_closed_at_the_header_deadline(thread_server):
    server = thread_server(header_timeout_s=1.5)
    idle = [connect(server) for _ in range(60)]  # never send a byte
    trickling = [connect(server) for _ in range(20)]
    for sock in trickling:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    for round_ in range(40):  # a header line every 0.1 s: each byte arrives in time, the headers never end
        if time.monotonic() - started > 4:
            break
        for sock in trickling:
            try:
                sock.sendall(f"X-Slow-{round_}: 1\r\n".encode())
            except OSError:
                pass  # already closed by the server: what is wanted
        time.sleep(0.1)
    for sock in trickling:
        raw, _ = read_until_closed(sock, within=5)
        status, body = parse_response(raw)
        assert_error(status, body, 408, "request_timeout")
    for sock in idle:
        raw, _ = read_until_closed(sock, within=5)
        assert raw == b""  # nothing asked, nothing answered: closed
    assert time.monotonic() - started < 10
    good_request(server)


def test_a_kept_alive_connection_has_the_header_deadline_again_for_its_next_request(thread_server):
    server = thread_server(header_timeout_s=1.0, idle_timeout_s=30.0)
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = b""
    while b"\r\n\r\n" not in first or not first.rstrip().endswith(b"}"):
        first += sock.recv(65536)  # the socket's own 15 s timeout bounds this
    assert first.startswith(b"HTTP/1.1 200")
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the next one, never finished
    raw, took = read_until_closed(sock, within=10)
    status, body = parse_response(raw)
    assert_error(status, body, 408, "request_timeout")
    assert took < 5, took  # the header deadline, not the 30 s keep-alive
    good_request(server)


def test_connections_past_the_limit_get_503_until_idle_ones_are_closed(thread_server):
    server = thread_server(max_connections=4, header_timeout_s=1.0)
    idle = [connect(server) for _ in range(4)]
    time.sleep(0.2)
    status, _, _ = server.request("POST", "/v1/chat/completions", HELLO)
    assert status == 503
    for sock in idle:
        read_until_closed(sock, within=5)
    good_request(server)


def test_sigterm_with_stalled_and_idle_clients_exits_within_seconds(tiny_pair, tmp_path):
    log = tmp_path / "stderr.log"
    process, server = start_process(tiny_pair[0], tmp_path, log)  # the default limits: --timeout 300
    try:
        stalled = stalled_body(server)
        idle = connect(server)
        partial = connect(server)
        partial.sendall(b"GET /health HTTP/1.1\r\n")
        time.sleep(0.5)  # the server has the stalled body's headers
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log.read_text()
        assert time.monotonic() - started < 5
        status, body = parse_response(read_until_closed(stalled, within=5)[0])
        assert_error(status, body, 503, "shutting_down")
        assert read_until_closed(idle, within=5)[0] == b""
    finally:
        process.kill()
    assert "Traceback" not in log.read_text()


# --- bodies the parser must survive -----------------------------------------------------------


@pytest.mark.parametrize(
    "raw,code",
    [
        (b"[" * 100_000, "json_too_deep"),
        (b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", "json_too_deep"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "seed": ' + b"7" * 5000 + b"}", "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 0.' + b"5" * 5000 + b"e-99999}", None),
    ],
    ids=["100k-brackets", "deep-messages", "5000-digit-int", "long-float"],
)
def test_deep_nesting_and_huge_numbers_are_400_not_500(thread_server, raw, code):
    server = thread_server()
    status, _, body = server.request("POST", "/v1/chat/completions", raw)
    error = assert_error(status, body, 400, code)
    assert "RecursionError" not in error["message"] and "\n" not in error["message"]
    good_request(server)


def test_a_nested_string_with_brackets_and_escapes_is_not_counted_as_depth(thread_server):
    server = thread_server(max_tokens=2)
    text = '[[[{{{\\"]]]' * 50 + "\\"
    status, _, body = server.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": text}]})
    assert status == 200, body


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"logit_bias": {"42": 100}}, "logit_bias"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"function_call": "auto"}, "function_call"),
    ],
    ids=["logit_bias", "tools", "function_call"],
)
def test_unimplemented_fields_are_400_naming_the_field(thread_server, extra, param):
    server = thread_server()
    status, _, body = server.request("POST", "/v1/chat/completions", HELLO | extra)
    assert_error(status, body, 400, "unsupported_parameter", param)
    status, _, body = server.request("POST", "/v1/chat/completions", HELLO | {"logit_bias": {}, "tools": []})
    assert status == 200, body  # asking for nothing is not refused


def test_assistant_tool_calls_are_400_not_dropped(thread_server):
    server = thread_server()
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
        {"role": "user", "content": "Well?"},
    ]
    status, _, body = server.request("POST", "/v1/chat/completions", {"messages": messages, "max_tokens": 2})
    assert_error(status, body, 400, "unsupported_parameter", "messages[1].tool_calls")
    good_request(server)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a few bytes that Pillow reads before any pixel."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [14_000, 100_000])
def test_pngs_past_pillows_bomb_limit_are_413_not_400(thread_server, side):
    import base64

    server = thread_server()
    url = "data:image/png;base64," + base64.b64encode(png_header(side, side)).decode()
    status, _, body = server.request("POST", "/v1/chat/completions", {"messages": [image_message(url)]})
    assert_error(status, body, 413, "image_too_large", "messages[0].content[0].image_url")
    good_request(server)


# --- remote images --------------------------------------------------------------------------------


def _small_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


PNG = _small_png()


class SlowImageHost:
    """An HTTP server on 127.0.0.1: /slow sends a byte every 0.2 s, /steady a PNG in 0.6 s, anything else 404."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(sock,), daemon=True).start()

    def _answer(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(5)
            try:
                request = sock.recv(65536)
                if request.startswith(b"GET /steady"):  # a real image in 0.6 s: slow, but within any fetch limit
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n" + b"Content-Length: %d\r\n\r\n" % len(PNG)
                    )
                    for at in range(0, len(PNG), len(PNG) // 3 + 1):
                        if self.stop.wait(0.2):
                            return
                        sock.sendall(PNG[at : at + len(PNG) // 3 + 1])
                    return
                if not request.startswith(b"GET /slow"):
                    sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
                for _ in range(300):  # at most a minute
                    if self.stop.wait(0.2):
                        return
                    sock.sendall(b"\0")
            except OSError:
                return  # the fetch gave up: what is wanted

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture
def slow_host():
    host = SlowImageHost()
    yield host
    host.close()


def remote_request(*urls: str) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "?"}]}], "max_tokens": 2}


def test_a_trickling_image_url_is_400_naming_it_after_the_fetch_deadline(thread_server, slow_host):
    server = thread_server(allow_remote=True, fetch_timeout_s=1.0)
    started = time.monotonic()
    status, _, body = server.request("POST", "/v1/chat/completions", remote_request(slow_host.url("/slow")))
    error = assert_error(status, body, 400, "image_fetch_failed", "messages[0].content[0].image_url")
    assert error["message"].startswith(slow_host.url("/slow")) and "within 1 s" in error["message"]
    assert time.monotonic() - started < 4
    good_request(server)


@pytest.mark.parametrize("path", ["/steady", "/slow"])
def test_image_fetches_count_against_the_request_timeout(thread_server, slow_host, path):
    # each /steady fetch is well within its own limit, but twenty of them are not within the request's
    server = thread_server(allow_remote=True, fetch_timeout_s=30.0, timeout_s=4.0, max_images=20)
    good_request(server)  # the model's first answer sets up its context: slow on a busy machine
    started = time.monotonic()
    status, _, body = server.request("POST", "/v1/chat/completions", remote_request(*[slow_host.url(path)] * 20))
    took = time.monotonic() - started
    assert_error(status, body, 408, "request_timeout")
    assert 3.8 < took < 10, took  # not twenty fetches of 0.6 s (12 s), nor one of 30 s
    good_request(server)


@pytest.mark.parametrize(
    "path,words",
    [("/missing", ["HTTP 404"]), ("/a b", ["space or a control character"]), ("/x\r\nHost: evil", ["control"])],
    ids=["404", "space", "crlf"],
)
def test_a_failed_or_malformed_image_url_is_one_line_naming_it(thread_server, slow_host, path, words):
    server = thread_server(allow_remote=True, fetch_timeout_s=2.0)
    status, _, body = server.request("POST", "/v1/chat/completions", remote_request(slow_host.url(path)))
    error = assert_error(status, body, 400, param="messages[0].content[0].image_url")
    assert "\n" not in error["message"] and "Error" not in error["message"], error
    for word in words:
        assert word in error["message"], error
    good_request(server)


def test_a_host_that_refuses_is_one_line(thread_server):
    server = thread_server(allow_remote=True)
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/x.png"
    status, _, body = server.request("POST", "/v1/chat/completions", remote_request(url))
    error = assert_error(status, body, 400, "image_fetch_failed")
    assert error["message"] == f"{url}: could not fetch the image: the connection was refused"
    good_request(server)


# --- the description ----------------------------------------------------------------------------


def test_openapi_json_describes_the_routes_and_matches_the_answers(thread_server):
    server = thread_server(max_tokens=4)
    status, _, spec = server.request("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1")
    assert {"/v1/chat/completions", "/v1/models", "/health", "/metrics"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    request = HELLO | {"temperature": 0.5, "stop": ["\n"], "stream": False}
    jsonschema.validate(request, schemas["ChatRequest"])
    status, _, answer = server.request("POST", "/v1/chat/completions", request)
    assert status == 200
    jsonschema.validate(answer, schemas["ChatCompletion"])
    status, _, error = server.request("POST", "/v1/chat/completions", HELLO | {"logit_bias": {"1": 2}})
    with pytest.raises(jsonschema.ValidationError):  # what the server refuses, the description refuses
        jsonschema.validate(HELLO | {"logit_bias": {"1": 2}}, schemas["ChatRequest"])
    jsonschema.validate(error, schemas["Error"])


# --- the command line ---------------------------------------------------------------------------


def test_a_port_in_use_and_a_bad_host_are_one_line(tiny_pair):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(app, ["serve", "-m", str(tiny_pair[0]), "-p", port])
        one_line_error(result, f"port {port}", "in use", "--port")
    finally:
        taken.close()
    result = CliRunner().invoke(app, ["serve", "-m", str(tiny_pair[0]), "--host", "999.1.1.1", "-p", "0"])
    one_line_error(result, "999.1.1.1", "--host")


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_timeout_that_is_no_limit_is_refused(tiny_pair, value):
    result = CliRunner().invoke(app, ["serve", "-m", str(tiny_pair[0]), "--timeout", value])
    one_line_error(result, "timeout", value.replace("-1", "-1.0"))


def test_an_empty_api_key_in_the_environment_is_refused_like_an_empty_option(tiny_pair):
    result = CliRunner(env={"SMOLCLI_API_KEY": ""}).invoke(app, ["serve", "-m", str(tiny_pair[0])])
    one_line_error(result, "API key is empty", "SMOLCLI_API_KEY")
    result = CliRunner().invoke(app, ["serve", "-m", str(tiny_pair[0]), "--api-key", ""])
    one_line_error(result, "API key is empty")


@pytest.mark.parametrize(
    "options,env", [(["--offline"], {}), ([], {"HF_HUB_OFFLINE": "1"})], ids=["--offline", "HF_HUB_OFFLINE"]
)
def test_offline_with_allow_remote_is_refused(tiny_pair, options, env):
    result = CliRunner(env=env).invoke(app, ["serve", "-m", str(tiny_pair[0]), "--allow-remote", *options])
    one_line_error(result, "--allow-remote", "offline")
