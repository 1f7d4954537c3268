"""The server's request parser fuzzed with hypothesis against the real server on 127.0.0.1, bounded in time.

Bodies are drawn near the shape of a chat request (every field sometimes right, sometimes any JSON
value), as arbitrary JSON, and as bytes; raw HTTP heads are drawn too. Whatever comes, the server
answers with a status it documents (never 500), within the limits, and answers a good request after.
Each property stops drawing after its share of FUZZ_SECONDS; a failure prints the example and seed.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import socket
import time

import jsonschema
import test_serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_serve import good_request

thread_server = test_serve.thread_server  # the fixture: the app under uvicorn in a thread, limits as a test needs

FUZZ_SECONDS = 32  # all properties together, on top of the server's start
ANSWERED = {200, 400, 403, 408, 413}  # what a chat request may get from a server at rest; never 500
PER_REQUEST_S = 30  # a request's own bound: far past the server's limits, so an answer this late is a hang


def _tiny_png() -> str:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 200, 40)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


URLS = [_tiny_png(), "data:image/png;base64,AAAA", "data:image/png,raw", "file:///etc/passwd", "/etc/hostname"]
URLS += ["http://127.0.0.1:9/x.png", "ftp://example/x", "", "data:video/mp4;base64,AAAA", "http://[::1"]

leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
any_json = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def sometimes(plausible: st.SearchStrategy) -> st.SearchStrategy:
    return plausible | any_json


part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": sometimes(st.text(max_size=40))}),
    st.fixed_dictionaries(
        {"type": st.just("image_url"), "image_url": sometimes(st.fixed_dictionaries({"url": st.sampled_from(URLS)}))}
    ),
    st.fixed_dictionaries({"type": st.just("video_url"), "video_url": st.sampled_from(URLS)}),
    any_json,
)
message = st.fixed_dictionaries(
    {"role": sometimes(st.sampled_from(["system", "developer", "user", "assistant", "tool"]))},
    optional={
        "content": st.text(max_size=40) | st.lists(part, max_size=3) | any_json,
        "tool_calls": any_json,
        "name": st.text(max_size=8),
    },
)
response_format = st.sampled_from(
    [
        {"type": "text"},
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
        {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "integer", "minimum": 0}}},
        {"type": "json_schema"},
        {"type": "xml"},
    ]
)
chat_body = st.fixed_dictionaries(
    {"messages": sometimes(st.lists(message, max_size=4))},
    optional={
        "model": sometimes(st.text(max_size=8)),
        "max_tokens": sometimes(st.integers(-2, 4)),
        "max_completion_tokens": sometimes(st.integers(-2, 4)),
        "temperature": sometimes(st.floats(-1, 3)),
        "top_p": sometimes(st.floats(-0.5, 1.5)),
        "seed": sometimes(st.integers(-1, 2**33)),
        "stop": sometimes(st.lists(st.text(max_size=3), max_size=5)),
        "logprobs": sometimes(st.booleans()),
        "top_logprobs": sometimes(st.integers(-1, 25)),
        "stream": sometimes(st.booleans()),
        "stream_options": sometimes(st.fixed_dictionaries({"include_usage": st.booleans()})),
        "response_format": sometimes(response_format),
        "n": sometimes(st.integers(0, 3)),
        "frequency_penalty": sometimes(st.floats(-2, 2)),
        "logit_bias": any_json,
        "tools": any_json,
        "ignore_eos": sometimes(st.booleans()),
    },
)

# requests the server should answer: the fuzz must reach the model too, not only the refusals
user_turn = st.fixed_dictionaries(
    {
        "role": st.just("user"),
        "content": st.text(min_size=1, max_size=30).filter(str.strip)
        | st.just([{"type": "image_url", "image_url": {"url": URLS[0]}}, {"type": "text", "text": "What?"}]),
    }
)
good_body = st.fixed_dictionaries(
    {"messages": st.lists(user_turn, min_size=1, max_size=2)},
    optional={
        "max_tokens": st.integers(1, 4),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0.01, 1),
        "seed": st.integers(0, 1000),
        "stop": st.lists(st.text(min_size=1, max_size=3), max_size=4),
        "logprobs": st.booleans(),
        "stream": st.booleans(),
        "response_format": response_format.filter(lambda f: f["type"] != "xml" and f != {"type": "json_schema"}),
    },
)


def _mangle(text: bytes, cut: int, insert: bytes) -> bytes:
    at = cut % (len(text) + 1)
    return text[:at] + insert + text[at:]


wild_body = st.one_of(
    chat_body.map(lambda body: json.dumps(body).encode()),
    any_json.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=300),
    st.builds(
        _mangle,
        chat_body.map(lambda body: json.dumps(body).encode()),
        st.integers(0, 10_000),
        st.sampled_from([b"[" * 200, b"{", b'"', b"\\", b"\x00", b"\xff", b"9" * 400, b"NaN", b"]]"]),
    ),
)
# one body in ten is one the model answers (each takes the model a second or so; a refusal, milliseconds)
raw_body = st.integers(0, 9).flatmap(
    lambda pick: good_body.map(lambda body: json.dumps(body).encode()) if pick == 0 else wild_body
)


class Budget:
    """Time for drawing examples; once one has failed, hypothesis's replays and shrinking run whatever the time."""

    def __init__(self, seconds: float):
        self.until = time.monotonic() + seconds
        self.failed = False

    def spent(self) -> bool:
        return not self.failed and time.monotonic() > self.until

    @contextlib.contextmanager
    def watching(self):
        try:
            yield
        except BaseException:
            self.failed = True
            raise


def post(port: int, raw: bytes) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PER_REQUEST_S)
    try:
        connection.request("POST", "/v1/chat/completions", body=raw, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


FUZZ = settings(
    max_examples=600,
    deadline=None,  # the budget bounds the run; one slow answer is not a failure
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


def test_fuzzed_chat_bodies_never_get_a_500_and_the_server_goes_on(thread_server):
    server = thread_server(max_tokens=4, max_images=2, header_timeout_s=2.0, body_timeout_s=5.0, timeout_s=20.0)
    status, _, spec = server.request("GET", "/openapi.json")
    error_schema = spec["components"]["schemas"]["Error"]
    budget = Budget(FUZZ_SECONDS * 0.75)
    seen: dict[int, int] = {}
    slowest: list[tuple[float, int, bytes]] = []  # shown when too few examples ran

    @FUZZ
    @given(raw=raw_body)
    def one(raw: bytes) -> None:
        if budget.spent():
            return
        with budget.watching():
            check_body(raw)

    def check_body(raw: bytes) -> None:
        started = time.monotonic()
        status, kind, answer = post(server.port, raw)
        took = time.monotonic() - started
        assert took < PER_REQUEST_S
        slowest.append((took, status, raw[:120]))
        slowest.sort(reverse=True)
        del slowest[5:]
        seen[status] = seen.get(status, 0) + 1
        assert status in ANSWERED, (status, answer[:500])
        if status != 200:
            error = json.loads(answer)
            jsonschema.validate(error, error_schema)
            assert "\n" not in error["error"]["message"] and "Traceback" not in error["error"]["message"]
        elif kind.startswith("text/event-stream"):
            assert answer.rstrip().endswith(b"data: [DONE]") or b'"error"' in answer
        else:
            assert json.loads(answer)["object"] == "chat.completion"

    one()
    assert seen.get(400, 0) >= 5 and seen.get(200, 0) >= 1, (seen, slowest)  # it reached refusals and answers
    good_request(server)


def test_fuzzed_http_heads_are_refused_or_closed_never_held(thread_server):
    server = thread_server(max_tokens=4, header_timeout_s=0.5, body_timeout_s=1.0, idle_timeout_s=0.5)
    budget = Budget(FUZZ_SECONDS * 0.25)

    @FUZZ
    @given(
        head=st.one_of(
            st.binary(max_size=200),
            st.builds(
                lambda method, path, headers: f"{method} {path} HTTP/1.1\r\n".encode() + headers + b"\r\n",
                st.sampled_from(["GET", "POST", "PUT", "BREW", ""]),
                st.sampled_from(["/v1/chat/completions", "/health", "/openapi.json", "/%00", "*", "/" + "a" * 9000]),
                st.lists(
                    st.sampled_from(
                        [
                            b"Host: x\r\n",
                            b"Content-Length: 50\r\n",
                            b"Content-Length: -1\r\n",
                            b"Content-Length: 99999999999999999999\r\n",
                            b"Transfer-Encoding: chunked\r\n",
                            b"Authorization: Bearer \xff\r\n",
                            b"X: " + b"y" * 70_000 + b"\r\n",
                            b"bad header\r\n",
                        ]
                    ),
                    max_size=4,
                ).map(b"".join),
            ),
        )
    )
    def one(head: bytes) -> None:
        if budget.spent():
            return
        with budget.watching():
            check_head(head)

    def check_head(head: bytes) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            try:
                sock.sendall(head)
            except OSError:
                return  # refused mid-send (a head over the size limit): closed, as wanted
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except ConnectionResetError:
                pass
            except TimeoutError:
                raise AssertionError(f"held for 10 s after {head[:100]!r}") from None
        if received:
            status = int(received.split(b" ", 2)[1])
            assert status != 500 and status < 600, received[:300]

    one()
    good_request(server)
