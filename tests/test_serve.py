"""`smolcli serve`: the real server on a loopback port, called with the official openai client and raw HTTP.

One `smolcli serve` process serves most tests; configurations of their own (an API key, a small
queue, a short timeout, a small body limit) run the same app under uvicorn in a thread. Every bad
request gets its status and OpenAI's error object, and the next good request still answers.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import openai
import pytest
from PIL import Image
from typer.testing import CliRunner

from smolcli.cli.app import app
from smolcli.runtime.chat.prompting import next_turn
from smolcli.serve import ServeLimits, ServeSettings, create_app
from smolcli.serve.metrics import parse_metrics
from smolcli.serve.server import Server, uvicorn_config

from cli_checks import one_line_error

SMOLCLI = Path(sys.executable).parent / "smolcli"
QUESTION = "Describe it."
START_TIMEOUT_S = 60


# --- servers ----------------------------------------------------------------------------------


class Running:
    """A server's address, and raw HTTP to it."""

    def __init__(self, port: int, key: str | None = None):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.key = key

    def client(self, key: str | None = None, **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key or self.key or "unused", max_retries=0, **options)

    def request(self, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None):
        """(status, headers, parsed JSON or text)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        sent = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {self.key}"} if self.key else {})
        connection.request(method, path, body=data, headers=sent | (headers or {}))
        response = connection.getresponse()
        raw = response.read().decode()
        connection.close()
        try:
            return response.status, dict(response.getheaders()), json.loads(raw)
        except json.JSONDecodeError:
            return response.status, dict(response.getheaders()), raw

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.request("GET", "/metrics")[2])


def start_process(model: Path, home: Path, log: Path, *options: str) -> tuple[subprocess.Popen, Running]:
    env = os.environ | {"SMOLCLI_HOME": str(home)}
    command = [str(SMOLCLI), "serve", "-m", str(model), "--port", "0", "--threads", "2", *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            running = Running(int(found.group(1)))
            while time.monotonic() < deadline and running.request("GET", "/health")[0] != 200:
                time.sleep(0.05)
            return process, running
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the server did not start: {log.read_text()}")


@contextlib.contextmanager
def serving(model: Path, home: Path, *options: str):
    """`smolcli serve` while the block runs, then SIGTERM and a clean exit; (Running, its stderr log)."""
    log = home / "stderr.log"
    process, running = start_process(model, home, log, *options)
    try:
        yield running, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0, log.read_text()
        finally:
            process.kill()


@pytest.fixture(scope="module")
def served(tiny_pair, tmp_path_factory):
    """`smolcli serve` on the tiny pair, images readable from one folder; (Running, log path, that folder)."""
    home, allowed = tmp_path_factory.mktemp("serve-home"), tmp_path_factory.mktemp("allowed")
    with serving(tiny_pair[0], home, "--allow-files", str(allowed), "--max-tokens-limit", "3000") as (running, log):
        yield running, log, allowed


@pytest.fixture
def server(served) -> Running:
    return served[0]


class ThreadServer:
    """The app under uvicorn in a thread: for the configurations one test needs."""

    def __init__(self, model: object, settings: ServeSettings):
        self.app = create_app(model, settings)
        # the bounds smolcli.serve() runs with (header deadline, keep-alive, connection cap), on a free port
        self.server = Server(uvicorn_config(self.app, settings, host="127.0.0.1", port=0))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        self.running = Running(self.server.servers[0].sockets[0].getsockname()[1], settings.api_key)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.running.request("GET", "/health")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def thread_server(tiny_pair):
    made: list[ThreadServer] = []

    def make(model=None, ready: bool = True, allow_remote: bool = False, **limits) -> Running:
        key = limits.pop("api_key", None)
        settings = ServeSettings(
            api_key=key, allow_remote=allow_remote, limits=ServeLimits(**limits), log_requests=False
        )
        started = ThreadServer(model or tiny_pair[0], settings)
        made.append(started)
        if ready:
            started.wait_ready()
        return started.running

    yield make
    for started in made:
        started.stop()


# --- requests ---------------------------------------------------------------------------------


def data_uri(path: Path) -> str:
    return f"data:image/{path.suffix.lstrip('.')};base64," + base64.b64encode(path.read_bytes()).decode()


def image_message(url: str, text: str = QUESTION) -> dict:
    return {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
    }


def good_request(server: Running) -> None:
    """The server goes on: a plain question is answered."""
    answer = server.client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello?"}], max_tokens=4
    )
    assert answer.choices[0].finish_reason in ("stop", "length")


def assert_error(status: int, body, expected: int, code: str | None = None, param: str | None = None) -> dict:
    assert status == expected, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def smolcli_ask(tiny_pair, image: Path, max_tokens: int, *extra: str) -> dict:
    done = subprocess.run(
        [
            str(SMOLCLI),
            "ask",
            "-m",
            str(tiny_pair[0]),
            "-i",
            str(image),
            "-n",
            str(max_tokens),
            "--json",
            *extra,
            QUESTION,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ignore_eos", [False, True], ids=["own-end", "24-tokens"])
def test_greedy_answer_equals_smolcli_ask_whole_and_streamed(server, tiny_pair, images, ignore_eos):
    max_tokens = 24
    expected = smolcli_ask(tiny_pair, images["square"], max_tokens, *(["--ignore-eos"] if ignore_eos else []))
    client = server.client()
    messages = [image_message(data_uri(images["square"]))]
    extra = {"ignore_eos": True} if ignore_eos else {}
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, extra_body=extra)
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.content == expected["text"]
    assert whole.choices[0].finish_reason == expected["finish_reason"]
    assert whole.usage.completion_tokens == expected["usage"]["completion_tokens"]
    assert whole.usage.prompt_tokens == expected["usage"]["prompt_tokens"]

    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=extra,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected["text"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected["finish_reason"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == expected["usage"]["completion_tokens"]


def test_logprobs_stop_seed_and_models(server, tiny_pair):
    client = server.client()
    asked = {"model": "tiny", "messages": [{"role": "user", "content": "Count."}], "max_tokens": 6}
    answer = client.chat.completions.create(**asked, logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens == 6
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.top_logprobs[0].logprob >= entry.logprob  # greedy: the likeliest token is the one taken
    assert "".join(bytes(e.bytes).decode("utf-8", "replace") for e in content).strip()  # the tokens' own bytes

    sampled = [
        client.chat.completions.create(**asked, temperature=1.0, top_p=0.9, seed=7).choices[0].message.content
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]  # a seed makes sampling repeatable

    long = client.chat.completions.create(**(asked | {"max_tokens": 40}), extra_body={"ignore_eos": True})
    stop = long.choices[0].message.content[5:8]
    cut = client.chat.completions.create(**(asked | {"max_tokens": 40}), stop=[stop], extra_body={"ignore_eos": True})
    assert cut.choices[0].message.content == long.choices[0].message.content.split(stop)[0]
    assert cut.choices[0].finish_reason == "stop"

    listed = client.models.list().data
    assert [m.id for m in listed] == [tiny_pair[0].stem]


def test_response_format_json_schema_and_json_object_validate(server):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "count": {"type": "integer"}},
        "required": ["name", "count"],
        "additionalProperties": False,
    }
    client = server.client()
    messages = [{"role": "user", "content": "Give a name and a count."}]
    answer = client.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content), schema)
    loose = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=200, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(loose.choices[0].message.content), dict)
    status, _, body = server.request(
        "POST",
        "/v1/chat/completions",
        {"messages": messages, "response_format": {"type": "json_schema", "json_schema": {"schema": {"oneOf": []}}}},
    )
    assert_error(status, body, 400)
    assert "json_schema" in body["error"]["message"]
    # a structured answer cut short names the request parameter that really cut it
    structured = {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema}}
    for cut, param in (({"max_tokens": 3}, "max_tokens"), ({"stop": ['"'], "max_tokens": 200}, "stop")):
        request = {"messages": messages, "response_format": structured, **cut}
        status, _, body = server.request("POST", "/v1/chat/completions", request)
        assert param in assert_error(status, body, 400, "answer_truncated", param)["message"], body


def test_second_turn_encodes_no_image_and_evaluates_only_its_own_tokens(server, tiny_pair, images):
    import llama_cpp

    client = server.client()
    messages = [{"role": "system", "content": "Be brief."}, image_message(data_uri(images["photo"]))]
    first = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8)
    assert first.model_extra["smolcli"]["images_encoded"] > 0
    before = server.metrics()
    follow_up = "And the colours?"
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": follow_up},
    ]
    second = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8)
    after = server.metrics()

    vocab = llama_cpp.Llama(model_path=str(tiny_pair[0]), vocab_only=True, verbose=False)
    own_tokens = len(vocab.tokenize(next_turn(follow_up).encode(), add_bos=False, special=True))
    assert after["smolcli_images_encoded_total"] == before["smolcli_images_encoded_total"]
    assert after["smolcli_image_cache_hits_total"] == before["smolcli_image_cache_hits_total"]
    evaluated = after["smolcli_prompt_tokens_evaluated_total"] - before["smolcli_prompt_tokens_evaluated_total"]
    assert evaluated == own_tokens
    assert after["smolcli_conversations_continued_total"] == before["smolcli_conversations_continued_total"] + 1
    details = second.model_extra["smolcli"]
    assert details == details | {"conversation": "continued", "evaluated_tokens": own_tokens, "images_encoded": 0}
    assert second.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens + first.usage.completion_tokens

    # the same history again: no longer kept as it was (the conversation went on), so it is evaluated
    # once more, its image from the embedding cache
    again = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8)
    details = again.model_extra["smolcli"]
    assert details["conversation"] == "replayed" and details["images_encoded"] == 0 and details["image_cache_hits"] > 0
    assert details["evaluated_tokens"] > own_tokens


def test_a_follow_up_restores_a_parked_conversation_and_answers_as_a_replay(server, images):
    """Between requests a kept conversation is parked (its context freed, its cache a saved state the /metrics gauges
    count); its follow-up restores it, evaluates only the new message, and answers as the whole history replayed."""
    client = server.client()
    messages = [{"role": "system", "content": "Be terse."}, image_message(data_uri(images["wide"]), "What is it?")]
    first = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    # it stays unparked until another request starts (serve.conversations): one comes between, so it is parked
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi."}], max_tokens=2)
    before = server.metrics()
    assert before["smolcli_conversations_kept"] >= 1 and before["smolcli_conversations_parked_bytes"] > 0
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "Say more."},
    ]
    asked = {"model": "tiny", "messages": messages, "max_tokens": 6, "temperature": 0, "logprobs": True}
    continued = client.chat.completions.create(**asked, extra_body={"ignore_eos": True})
    after = server.metrics()
    assert continued.model_extra["smolcli"]["conversation"] == "continued"
    assert after["smolcli_conversations_continued_total"] == before["smolcli_conversations_continued_total"] + 1
    assert after["smolcli_conversations_parked_bytes"] > 0  # parked again, one turn longer
    replayed = client.chat.completions.create(**asked, extra_body={"ignore_eos": True})
    assert replayed.model_extra["smolcli"]["conversation"] == "replayed"
    assert replayed.choices[0].message.content == continued.choices[0].message.content
    # the same tokens; their log-probabilities near, not equal: a replay evaluates the history in one go, its
    # answers re-tokenized from their text (tests/test_chat_park.py holds a parked Chat to exact equality)
    pairs = zip(continued.choices[0].logprobs.content, replayed.choices[0].logprobs.content, strict=True)
    assert all(kept.bytes == again.bytes and abs(kept.logprob - again.logprob) < 0.2 for kept, again in pairs)


def test_local_image_files_only_under_allow_files(served, images):
    server, _, allowed = served
    inside = allowed / "inside.png"
    inside.write_bytes(images["square"].read_bytes())
    answer = server.client().chat.completions.create(
        model="tiny", messages=[image_message(inside.as_uri())], max_tokens=4
    )
    assert answer.model_extra["smolcli"]["images_encoded"] + answer.model_extra["smolcli"]["image_cache_hits"] > 0
    for url in (images["square"].as_uri(), str(allowed / ".." / images["square"].name), "/etc/passwd"):
        status, _, body = server.request("POST", "/v1/chat/completions", {"messages": [image_message(url)]})
        assert_error(status, body, 403, "image_path_not_allowed", "messages[0].content[0].image_url")
    status, _, body = server.request(
        "POST", "/v1/chat/completions", {"messages": [image_message("https://example.com/cat.png")]}
    )
    assert_error(status, body, 403, "remote_images_not_allowed")
    good_request(server)


# --- bad requests -----------------------------------------------------------------------------


WRONG = [
    ({"messages": "hello"}, "messages", "invalid_type"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "invalid_value"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}, "max_tokens", "invalid_type"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": True}, "max_tokens", "invalid_type"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}, "max_tokens", "invalid_value"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature", "invalid_type"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p", "invalid_value"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": [1]}, "stop", "invalid_type"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream", "invalid_type"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n", "unsupported_parameter"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "messages", None),
]


@pytest.mark.parametrize("body,param,code", WRONG, ids=[f"{w[1]}-{w[2]}" for w in WRONG])
def test_wrong_types_and_values_are_400_naming_the_field(server, body, param, code):
    status, _, answer = server.request("POST", "/v1/chat/completions", body)
    assert_error(status, answer, 400, code, param)


def test_malformed_json_is_400_and_the_server_goes_on(server):
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        status, _, body = server.request("POST", "/v1/chat/completions", raw)
        assert_error(status, body, 400, "invalid_json")
    good_request(server)


def test_base64_that_is_not_an_image_is_400(server):
    for url in (
        "data:image/png;base64," + base64.b64encode(b"plain text, no pixels").decode(),
        "data:image/png;base64,!!",
    ):
        status, _, body = server.request("POST", "/v1/chat/completions", {"messages": [image_message(url)]})
        assert_error(status, body, 400, param="messages[0].content[0].image_url")
    good_request(server)


def test_a_100_megapixel_png_is_413_before_it_is_decoded(server, tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(huge)  # a few kB on disk, 100 megapixels decoded
    started = time.monotonic()
    status, _, body = server.request("POST", "/v1/chat/completions", {"messages": [image_message(data_uri(huge))]})
    error = assert_error(status, body, 413, "image_too_large")
    assert "100000000 pixels" in error["message"]
    assert time.monotonic() - started < 2
    good_request(server)


def test_1000_messages_are_400(server):
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(1000)]
    status, _, body = server.request("POST", "/v1/chat/completions", {"messages": messages})
    assert_error(status, body, 400, "too_many_messages", "messages")
    good_request(server)


def test_a_prompt_longer_than_the_context_is_400_context_length_exceeded(server):
    status, _, body = server.request(
        "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 2000}], "max_tokens": 8}
    )
    error = assert_error(status, body, 400, "context_length_exceeded", "messages")
    assert "tokens" in error["message"]
    with pytest.raises(openai.BadRequestError):  # streamed too: refused before the stream starts
        server.client().chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "word " * 2000}], max_tokens=8, stream=True
        )
    good_request(server)


def test_a_client_that_vanishes_mid_stream_stops_its_generation(server):
    before = server.metrics()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = {"messages": [{"role": "user", "content": "Go on."}], "max_tokens": 3000, "stream": True, "ignore_eos": True}
    connection.request(
        "POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.read(6) == b"data: "
    connection.sock.shutdown(2)  # gone, mid-answer
    connection.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = server.metrics()
        if now["smolcli_cancelled_total"] > before["smolcli_cancelled_total"] and now["smolcli_queue_depth"] == 0:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the generation went on: {now}")
    assert now["smolcli_generated_tokens_total"] - before["smolcli_generated_tokens_total"] < 3000
    good_request(server)


def test_request_log_has_one_line_per_request(served):
    server, log, _ = served
    lines = len(log.read_text().splitlines())
    server.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Log."}], max_tokens=3)
    server.request("GET", "/v1/models?from=log-test")
    deadline = time.monotonic() + 5  # each line is written once its response has gone out
    while not any('"GET /v1/models"' in line for line in log.read_text().splitlines()[lines:]):
        assert time.monotonic() < deadline, "no log line for the GET"
        time.sleep(0.02)
    new = log.read_text().splitlines()[lines:]  # an earlier test's stream may log its end in between
    chat = [line for line in new if "max_tokens=3 " in line]
    assert len(chat) == 1 and '"POST /v1/chat/completions" 200' in chat[0] and "completion=" in chat[0], new
    assert sum('"GET /v1/models" 200' in line for line in new) == 1, new


# --- configurations of their own --------------------------------------------------------------


def test_a_wrong_or_missing_api_key_is_401(thread_server):
    server = thread_server(api_key="right-key")
    with pytest.raises(openai.AuthenticationError) as raised:
        server.client("wrong-key").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert raised.value.status_code == 401 and raised.value.code == "invalid_api_key"
    status, headers, body = Running(server.port).request("GET", "/v1/models")  # no key at all
    assert_error(status, body, 401, "invalid_api_key")
    assert Running(server.port).request("GET", "/health")[0] == 200  # health stays open to probes
    good_request(server)


def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing(thread_server):
    server = thread_server(queue_size=1)
    body = {"messages": [{"role": "user", "content": "Go on."}], "max_tokens": 150, "ignore_eos": True}

    def call(_):
        return server.request("POST", "/v1/chat/completions", body)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(call, range(6)))
    statuses = sorted(status for status, _, _ in results)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 2, statuses
    for status, headers, answer in results:
        if status == 503:
            assert int(headers["retry-after"]) >= 1
            assert_error(status, answer, 503, "queue_full")
        else:
            assert answer["usage"]["completion_tokens"] == 150
    deadline = time.monotonic() + 5  # the worker counts a job done just after its answer has gone out
    while server.metrics()["smolcli_queue_depth"] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    good_request(server)


def test_a_request_over_the_time_limit_is_408(thread_server, tiny_pair):
    from smolcli.api.model import Model

    gate = threading.Event()

    class Stuck(Model):
        def chat(self, *args, **settings):
            gate.wait(30)  # a prefill that takes far too long
            return super().chat(*args, **settings)

    server = thread_server(Stuck.open(tiny_pair[0]), timeout_s=1.5)
    body = {"messages": [{"role": "user", "content": "Go on."}], "max_tokens": 8}
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # one held by the worker, one waiting behind it
        results = list(pool.map(lambda _: server.request("POST", "/v1/chat/completions", body), range(2)))
    for status, _, answer in results:
        assert_error(status, answer, 408, "request_timeout")
    assert time.monotonic() - started < 1.5 * 2 + 2
    gate.set()
    # The held job finishes in the worker before the follow-up gets its 1.5 s: wait for it, bounded, so a
    # loaded machine does not make the follow-up itself time out.
    deadline = time.monotonic() + 30
    while server.metrics()["smolcli_queue_depth"] > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    good_request(server)
    assert server.metrics()["smolcli_timed_out_total"] + server.metrics()["smolcli_cancelled_total"] >= 1


def test_a_body_over_the_size_limit_is_413(thread_server):
    server = thread_server(max_body_bytes=4096)
    status, _, body = server.request(
        "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 10_000}]}
    )
    assert_error(status, body, 413, "payload_too_large")
    good_request(server)


def test_health_is_ready_only_once_the_model_is_loaded(thread_server, tiny_pair):
    from smolcli.api.model import Model

    gate = threading.Event()

    class SlowToLoad(Model):
        @property
        def engine(self):
            gate.wait(30)  # the weights take their time
            return super().engine

    server = thread_server(SlowToLoad.open(tiny_pair[0]), ready=False)
    status, headers, body = server.request("GET", "/health")
    assert (status, body["status"]) == (503, "loading") and headers["retry-after"]
    status, _, body = server.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert_error(status, body, 503, "model_loading")
    gate.set()
    deadline = time.monotonic() + 30
    while server.request("GET", "/health")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    good_request(server)


def test_sigterm_finishes_the_request_in_flight_and_exits_0(tiny_pair, tmp_path):
    log = tmp_path / "stderr.log"
    process, server = start_process(tiny_pair[0], tmp_path, log, "--max-tokens-limit", "2000")
    try:
        chunks = server.client().chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Go on."}],
            max_tokens=200,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        first = next(iter(chunks))
        assert first.choices[0].delta.role == "assistant"
        process.send_signal(signal.SIGTERM)
        rest = list(chunks)
        assert rest[-1].usage.completion_tokens == 200
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        process.kill()
    assert "stopped" in log.read_text() and "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    "options,words",
    [
        (["-m", "/nonexistent/model.gguf"], ["/nonexistent/model.gguf"]),
        (["--allow-files", "/nonexistent-folder"], ["--allow-files", "existing folder"]),
        (["--port", "70000"], ["port"]),
        (["--max-frames", "0"], ["max_frames", "at least 1"]),
    ],
    ids=["no-model", "no-folder", "bad-port", "no-frames"],
)
def test_serve_refuses_bad_options_in_one_line(tiny_pair, options, words):
    arguments = ["serve", "-m", str(tiny_pair[0]), *options]
    one_line_error(CliRunner().invoke(app, arguments), *words)


# --- the library under the server ---------------------------------------------------------------


def test_a_replayed_history_then_a_turn_equals_raw_llama_on_the_whole_conversation(tiny_pair, images):
    import smolcli

    from raw_llama import RawMtmd

    with smolcli.load(tiny_pair[0], threads=1) as model:
        chat = model.chat(max_tokens=8, ignore_eos=True)
        chat.replay([(QUESTION, [images["square"]], "A square, mostly.")])
        answer = chat.send("And the colours?")
        assert chat.turns[-1].image_tokens == 0 and [m.role for m in chat.messages] == ["user", "assistant"] * 2
    whole = (
        f"<|im_start|>User:<__media__>{QUESTION}<end_of_utterance>\nAssistant: A square, mostly.<end_of_utterance>\n"
        "User: And the colours?<end_of_utterance>\nAssistant:"
    )
    with RawMtmd(*tiny_pair) as raw:
        raw.eval_prompt(whole, [images["square"]])
        assert answer.text == raw.greedy(8).removeprefix(" ")


def test_configure_changes_a_chats_settings_between_turns(tiny_pair):
    import smolcli

    with smolcli.load(tiny_pair[0], threads=1) as model:
        chat = model.chat(max_tokens=4, ignore_eos=True)
        assert chat.send("Hi").usage.completion_tokens == 4
        chat.configure(max_tokens=9, ignore_eos=True)
        assert chat.send("More").usage.completion_tokens == 9
