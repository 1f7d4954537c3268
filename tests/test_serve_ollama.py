"""ollama's API on `smolcli serve`: the official ollama client and raw HTTP against a real loopback server.

Greedy answers equal `smolcli ask` on the same pair, whole and streamed, through chat and generate;
a schema `format` gives JSON valid under it; a conversation's second turn evaluates only its own
tokens; every bad request gets its status and ollama's {"error": "..."}, and the next one answers.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time

import jsonschema
import ollama
import pytest
from PIL import Image
from test_serve import QUESTION, Running, ThreadServer, serving, smolcli_ask

from smolcli.runtime.chat.prompting import next_turn
from smolcli.serve import ServeLimits, ServeSettings

MAX_TOKENS = 24


@pytest.fixture(scope="module")
def served(tiny_pair, tmp_path_factory):
    with serving(tiny_pair[0], tmp_path_factory.mktemp("ollama-home"), "--max-tokens-limit", "3000") as started:
        yield started


@pytest.fixture
def server(served) -> Running:
    return served[0]


@pytest.fixture
def name(tiny_pair) -> str:
    return tiny_pair[0].stem + ":latest"


def client(server: Running, **headers) -> ollama.Client:
    return ollama.Client(host=server.base, headers=headers or None)


def greedy(max_tokens: int = MAX_TOKENS) -> dict:
    return {"temperature": 0, "num_predict": max_tokens}


def good_request(server: Running, name: str) -> None:
    """The server goes on: a plain question is answered."""
    answer = client(server).chat(model=name, messages=[{"role": "user", "content": "Hello?"}], options=greedy(4))
    assert answer.done and answer.done_reason in ("stop", "length")


def assert_error(status: int, body, expected: int) -> str:
    assert status == expected, body
    assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body["error"]


# --- listings -----------------------------------------------------------------------------------


def test_list_show_ps_and_version_name_the_served_pair(server, tiny_pair, name):
    listed = client(server).list()
    assert [m.model for m in listed.models] == [name]
    entry = listed.models[0]
    assert entry.size == tiny_pair[0].stat().st_size + tiny_pair[1].stat().st_size
    assert entry.details.format == "gguf" and len(entry.digest) == 64

    shown = client(server).show(name)
    assert "vision" in shown.capabilities and "completion" in shown.capabilities
    assert shown.template and shown.modelinfo["general.parameter_count"] > 0
    assert client(server).show(tiny_pair[0].stem).details.format == "gguf"  # the tag may be left out

    running = client(server).ps().models
    assert [m.model for m in running] == [name] and running[0].context_length > 0
    status, _, body = server.request("GET", "/api/version")
    assert status == 200 and body["version"].count(".") == 2


# --- answers ------------------------------------------------------------------------------------


def test_chat_with_an_image_equals_smolcli_ask_whole_and_streamed(server, tiny_pair, images, name):
    expected = smolcli_ask(tiny_pair, images["square"], MAX_TOKENS)
    messages = [{"role": "user", "content": QUESTION, "images": [images["square"]]}]
    whole = client(server).chat(model=name, messages=messages, options=greedy(), stream=False)
    assert whole.model == name and whole.done
    assert whole.message.role == "assistant" and whole.message.content == expected["text"]
    assert whole.done_reason == expected["finish_reason"]
    assert whole.prompt_eval_count == expected["usage"]["prompt_tokens"]
    assert whole.eval_count == expected["usage"]["completion_tokens"]
    assert whole.total_duration >= whole.prompt_eval_duration + whole.eval_duration > 0  # nanoseconds
    assert whole.total_duration < 120 * 10**9

    chunks = list(client(server).chat(model=name, messages=messages, options=greedy(), stream=True))
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    assert "".join(c.message.content for c in chunks) == expected["text"]
    assert chunks[-1].done_reason == expected["finish_reason"]
    assert chunks[-1].eval_count == expected["usage"]["completion_tokens"]


def test_generate_with_an_image_equals_smolcli_ask(server, tiny_pair, images, name):
    expected = smolcli_ask(tiny_pair, images["photo"], MAX_TOKENS)
    whole = client(server).generate(model=name, prompt=QUESTION, images=[images["photo"]], options=greedy())
    assert whole.response == expected["text"] and whole.done_reason == expected["finish_reason"]
    assert whole.prompt_eval_count == expected["usage"]["prompt_tokens"]
    pieces = client(server).generate(
        model=name, prompt=QUESTION, images=[images["photo"].read_bytes()], options=greedy(), stream=True
    )
    assert "".join(p.response for p in pieces) == expected["text"]


def test_the_default_is_a_stream_of_json_lines(server, name):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = {"model": name, "messages": [{"role": "user", "content": "Count."}], "options": greedy(5)}
    connection.request("POST", "/api/chat", body=json.dumps(body))
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("content-type") == "application/x-ndjson"
    lines = [json.loads(line) for line in response.read().decode().splitlines()]
    connection.close()
    assert len(lines) >= 2 and lines[-1]["done"] is True and not any(line["done"] for line in lines[:-1])
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count"):
        assert isinstance(lines[-1][key], int), key
    assert lines[-1]["created_at"].endswith("Z")


def test_a_schema_format_gives_json_valid_under_it(server, name):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "count": {"type": "integer"}},
        "required": ["name", "count"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": "Give a name and a count."}]
    answer = client(server).chat(model=name, messages=messages, format=schema, options=greedy(200))
    jsonschema.validate(json.loads(answer.message.content), schema)
    # a structured answer cut short names ollama's option that cut it
    cut = {"model": name, "messages": messages, "format": schema, "options": {"num_predict": 3}, "stream": False}
    status, _, body = server.request("POST", "/api/chat", cut)
    assert "options.num_predict" in assert_error(status, body, 400)
    loose = client(server).generate(model=name, prompt="Give a name and a count.", format="json", options=greedy(200))
    assert isinstance(json.loads(loose.response), dict)


def test_a_second_turn_evaluates_only_its_own_tokens(server, tiny_pair, images, name):
    import llama_cpp

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION, "images": [images["wide"]]},
    ]
    first = client(server).chat(model=name, messages=messages, options=greedy(8))
    before = server.metrics()
    follow_up = "And the colours?"
    messages += [{"role": "assistant", "content": first.message.content}, {"role": "user", "content": follow_up}]
    second = client(server).chat(model=name, messages=messages, options=greedy(8), keep_alive="5m")
    after = server.metrics()

    vocab = llama_cpp.Llama(model_path=str(tiny_pair[0]), vocab_only=True, verbose=False)
    own_tokens = len(vocab.tokenize(next_turn(follow_up).encode(), add_bos=False, special=True))
    assert second.prompt_eval_count == own_tokens < first.prompt_eval_count
    assert after["smolcli_conversations_continued_total"] == before["smolcli_conversations_continued_total"] + 1
    assert after["smolcli_images_encoded_total"] == before["smolcli_images_encoded_total"]
    evaluated = after["smolcli_prompt_tokens_evaluated_total"] - before["smolcli_prompt_tokens_evaluated_total"]
    assert evaluated == own_tokens


def test_options_seed_stop_keep_alive_and_an_empty_request_that_only_loads(server, name):
    asked = {"model": name, "messages": [{"role": "user", "content": "Count."}]}
    sampled = [
        client(server).chat(**asked, options={"temperature": 1.0, "top_k": 20, "seed": 7, "num_predict": 6})
        for _ in range(2)
    ]
    assert sampled[0].message.content == sampled[1].message.content  # a seed makes sampling repeatable
    long = client(server).chat(**asked, options=greedy(40), keep_alive=0).message.content
    if len(long) > 8:
        stop = long[5:8]
        cut = client(server).chat(**asked, options=greedy(40) | {"stop": [stop]})
        assert cut.message.content == long.split(stop)[0] and cut.done_reason == "stop"
    big = client(server).chat(**asked, options=greedy(4) | {"num_ctx": 100_000})  # capped at the model's own
    assert big.done
    for loaded in (client(server).generate(model=name), client(server).chat(model=name, messages=[])):
        assert loaded.done and loaded.done_reason == "load"


# --- bad requests -------------------------------------------------------------------------------


def _image_b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def bad_requests(name: str, huge_png: str) -> list[tuple[str, str, object, int]]:
    user = [{"role": "user", "content": "hi"}]
    return [
        ("POST", "/api/chat", {"messages": user}, 400),  # no model
        ("POST", "/api/chat", {"model": "llava:7b", "messages": user}, 404),
        ("POST", "/api/chat", {"model": name, "messages": "hello"}, 400),
        ("POST", "/api/chat", {"model": name, "messages": [{"role": "robot", "content": "hi"}]}, 400),
        ("POST", "/api/chat", {"model": name, "messages": [{"role": "user", "content": 5}]}, 400),
        ("POST", "/api/chat", {"model": name, "messages": [{"role": "user", "content": "<image>"}]}, 400),
        ("POST", "/api/chat", {"model": name, "messages": [{"role": "user", "content": "hi", "images": ["!!"]}]}, 400),
        ("POST", "/api/chat", {"model": name, "messages": [{"role": "user", "images": [_b64_text()]}]}, 400),
        ("POST", "/api/chat", {"model": name, "messages": [{"role": "user", "images": [huge_png]}]}, 413),
        ("POST", "/api/chat", {"model": name, "messages": user, "options": {"temperature": "hot"}}, 400),
        ("POST", "/api/chat", {"model": name, "messages": user, "options": {"num_predict": 5000}}, 400),
        ("POST", "/api/chat", {"model": name, "messages": user, "options": {"top_k": -3}}, 400),
        ("POST", "/api/chat", {"model": name, "messages": user, "options": {"repeat_penalty": 1.3}}, 400),
        ("POST", "/api/chat", {"model": name, "messages": user, "options": "hot"}, 400),
        ("POST", "/api/chat", {"model": name, "messages": user, "format": "yaml"}, 400),
        ("POST", "/api/chat", {"model": name, "messages": user, "format": {"oneOf": []}}, 400),
        ("POST", "/api/chat", {"model": name, "messages": user, "stream": "yes"}, 400),
        ("POST", "/api/chat", {"model": name, "messages": user, "tools": [{"type": "function"}]}, 400),
        ("POST", "/api/chat", {"model": name, "messages": [*user, {"role": "assistant", "content": "yo"}]}, 400),
        ("POST", "/api/chat", {"model": name, "messages": [{"role": "user", "content": "word " * 2000}]}, 400),
        ("POST", "/api/chat", b"{not json", 400),
        ("POST", "/api/generate", {"model": name, "prompt": "hi", "raw": True}, 400),
        ("POST", "/api/generate", {"model": name, "prompt": "hi", "context": [1, 2, 3]}, 400),
        ("POST", "/api/generate", {"model": name, "prompt": 7}, 400),
        ("POST", "/api/show", {"model": "llava"}, 404),
        ("GET", "/api/pull", None, 404),
        ("GET", "/api/chat", None, 405),
    ]


def _b64_text() -> str:
    return base64.b64encode(b"plain text, no pixels").decode()


def test_every_bad_request_gets_its_status_and_the_next_one_answers(server, name, tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(huge)  # a few kB on disk, 100 megapixels decoded
    for method, path, body, expected in bad_requests(name, _image_b64(huge)):
        status, _, answer = server.request(method, path, body)
        assert_error(status, answer, expected)
        good_request(server, name)
    with pytest.raises(ollama.ResponseError) as raised:
        client(server).chat(model="llava", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 404 and "llava" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:  # streamed: refused before the stream starts
        list(
            client(server).chat(
                model=name, messages=[{"role": "user", "content": "hi"}], stream=True, format={"oneOf": []}
            )
        )
    assert raised.value.status_code == 400
    good_request(server, name)


def test_a_client_that_leaves_cancels_its_request_and_the_server_goes_on(tiny_pair, name):
    from smolcli.api.model import Model

    gate = threading.Event()

    class Slow(Model):
        def chat(self, *args, **settings):
            gate.wait(30)  # a prefill that takes its time: the client leaves meanwhile
            return super().chat(*args, **settings)

    started = ThreadServer(Slow.open(tiny_pair[0]), ServeSettings(log_requests=False))
    try:
        started.wait_ready()
        server = started.running
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        body = {"model": name, "messages": [{"role": "user", "content": "Go on."}], "options": greedy(500)}
        connection.request("POST", "/api/chat", body=json.dumps(body))
        deadline = time.monotonic() + 20
        while server.metrics()["smolcli_queue_depth"] == 0:  # the worker holds it
            assert time.monotonic() < deadline, "the request did not arrive"
            time.sleep(0.02)
        connection.sock.shutdown(2)  # gone, before its answer
        connection.close()
        time.sleep(0.3)  # the server notices
        gate.set()  # the worker gets on with it and finds it cancelled at its first token
        deadline = time.monotonic() + 20
        while (now := server.metrics())["smolcli_cancelled_total"] < 1 or now["smolcli_queue_depth"]:
            assert time.monotonic() < deadline, f"the request was not cancelled: {now}"
            time.sleep(0.05)
        assert now["smolcli_generated_tokens_total"] < 500
        good_request(server, name)
    finally:
        gate.set()
        started.stop()


def test_the_api_key_applies_to_ollamas_routes(tiny_pair, name):
    started = ThreadServer(tiny_pair[0], ServeSettings(api_key="right-key", limits=ServeLimits(), log_requests=False))
    try:
        started.wait_ready()
        anonymous = Running(started.running.port)
        for path in ("/api/tags", "/api/version"):
            status, headers, body = anonymous.request("GET", path)
            assert "API key" in assert_error(status, body, 401) and headers["www-authenticate"] == "Bearer"
        with pytest.raises(ollama.ResponseError) as raised:
            client(anonymous, Authorization="Bearer wrong-key").list()
        assert raised.value.status_code == 401
        keyed = client(anonymous, Authorization="Bearer right-key")
        assert [m.model for m in keyed.list().models] == [name]
        assert keyed.chat(model=name, messages=[{"role": "user", "content": "hi"}], options=greedy(3)).done
    finally:
        started.stop()
