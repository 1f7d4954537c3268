"""`smolcli chat` and ChatSession: later turns reuse the KV cache, evaluate only themselves, and equal a
from-scratch decode; failed or interrupted turns leave no trace; the CLI works through a pipe."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smolcli.cli.app import app
from smolcli.errors import SmolcliError
from smolcli.runtime.chat.session import ChatSession
from smolcli.runtime.decoding.generation import GenerationLimits
from smolcli.runtime.decoding.sampling import Sampler, SamplingOptions
from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.vision.images import load_image

from cli_checks import default_sigint
from raw_llama import RawMtmd

SMOLCLI = Path(sys.executable).parent / "smolcli"  # the entry point installed beside this interpreter
FIRST, SECOND = "Describe it.", "And the colours?"
N = 8


@pytest.fixture
def session(tiny_pair):
    def make(n_ctx: int | None = None, max_tokens: int = N) -> ChatSession:
        engine = Engine(resolve_model_files(tiny_pair[0]), EngineOptions(threads=1))
        sampler = Sampler(SamplingOptions())
        made.append((engine, sampler))
        return ChatSession(engine, sampler, GenerationLimits(max_tokens=max_tokens, ignore_eos=True), n_ctx=n_ctx)

    made: list = []
    yield make
    for engine, sampler in made:
        sampler.close()
        engine.close()


def count_tokens(model: Path, text: str) -> int:
    import llama_cpp

    vocab = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    return len(vocab.tokenize(text.encode(), add_bos=False, special=True))


def reference_two_turns(model: Path, mmproj: Path, image: Path, first: str, second: str, n: int) -> tuple[str, str]:
    """Both answers from raw llama.cpp + mtmd: the whole first turn, its answer, then the second turn's text."""
    with RawMtmd(model, mmproj) as raw:
        raw.eval_prompt(f"<|im_start|>User:<__media__>{first}<end_of_utterance>\nAssistant:", [image])
        first_answer = raw.greedy(n).removeprefix(" ")
        raw.eval_text(f"<end_of_utterance>\nUser: {second}<end_of_utterance>\nAssistant:")
        return first_answer, raw.greedy(n).removeprefix(" ")


# --- ChatSession ----------------------------------------------------------------------------


def test_second_turn_encodes_no_image_and_evaluates_only_its_own_tokens(session, tiny_pair, images):
    chat = session()
    chat.attach(load_image(images["square"]))
    chat.send(FIRST)
    after_first = dataclasses.replace(chat.engine.counters)
    assert after_first.images_encoded > 0 and after_first.image_tokens == chat.turns[0].image_tokens > 0
    chat.send(SECOND)
    after_second = chat.engine.counters
    assert after_second.images_encoded == after_first.images_encoded
    assert after_second.image_tokens == after_first.image_tokens
    assert after_second.encode_seconds == after_first.encode_seconds
    own_tokens = count_tokens(tiny_pair[0], f"<end_of_utterance>\nUser: {SECOND}<end_of_utterance>\nAssistant:")
    assert chat.turns[1].prompt_tokens == own_tokens
    assert after_second.text_tokens - after_first.text_tokens == own_tokens
    assert chat.turns[1].image_tokens == 0
    assert chat.n_past == chat.turns[0].prompt_tokens + N + own_tokens + N


def test_reused_cache_answers_equal_a_from_scratch_decode(session, tiny_pair, images):
    chat = session()
    chat.attach(load_image(images["square"]))
    got = (chat.send(FIRST).text, chat.send(SECOND).text)
    assert got == reference_two_turns(*tiny_pair, images["square"], FIRST, SECOND, N)
    assert [m.role for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    assert chat.messages[0].images == [str(images["square"])] and chat.messages[2].images == []


def test_clear_starts_over(session, images):
    chat = session()
    chat.attach(load_image(images["square"]))
    first = chat.send(FIRST).text
    chat.send(SECOND)
    encoded = chat.engine.counters.images_encoded
    chat.clear()
    assert chat.n_past == 0 and chat.messages == []
    chat.attach(load_image(images["square"]))
    assert chat.send(FIRST).text == first
    assert chat.engine.counters.images_encoded == 2 * encoded
    assert chat.n_past == chat.turns[-1].prompt_tokens + N


def test_turn_that_does_not_fit_is_refused_and_leaves_no_trace(session, images):
    chat = session(n_ctx=256)
    chat.attach(load_image(images["square"]))
    chat.send(FIRST)
    n_past, messages = chat.n_past, list(chat.messages)
    with pytest.raises(SmolcliError, match="context is full.*/clear"):
        chat.send("tell me more " * 40)
    assert chat.n_past == n_past and chat.messages == messages
    chat.send(SECOND)  # the cache is still consistent: llama.cpp accepts the next positions
    assert chat.n_past == n_past + chat.turns[-1].prompt_tokens + N


def test_interrupted_answer_is_dropped_and_the_turn_can_be_asked_again(session, images):
    def interrupt(_text):
        raise KeyboardInterrupt

    plain = session()
    plain.attach(load_image(images["square"]))
    plain.send(FIRST)
    expected = plain.send(SECOND).text

    chat = session()
    chat.attach(load_image(images["square"]))
    chat.send(FIRST)
    n_past = chat.n_past
    with pytest.raises(KeyboardInterrupt):
        chat.send(SECOND, on_text=interrupt)
    assert chat.n_past == n_past and len(chat.messages) == 2
    assert chat.send(SECOND).text == expected


def test_answer_that_fills_the_context_stops_and_says_so(session):
    chat = session(n_ctx=256, max_tokens=1000)
    answer = chat.send("hi")
    assert answer.context_full and answer.finish_reason == "length"
    assert chat.n_past == 256
    with pytest.raises(SmolcliError, match="/clear"):
        chat.send("more?")


# --- the CLI ---------------------------------------------------------------------------------


def chat_cli(*args: str, input: str):
    return CliRunner().invoke(app, ["chat", "--threads", "1", *args], input=input)


def test_pipe_answers_each_line_and_commands_work(tiny_pair, images, tmp_path):
    model = str(tiny_pair[0])
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    script = (
        "\n".join(
            [
                f"/image {images['square']}",
                FIRST,
                SECOND,
                f"/save {before}",
                "/clear",
                "/bogus",
                f"/image {tmp_path / 'missing.png'}",
                "",
                "hello",
                f"/save {after}",
                "/exit",
                "never answered",
            ]
        )
        + "\n"
    )
    result = chat_cli("-m", model, "--stats", "-n", str(N), input=script)

    assert result.exit_code == 1  # two lines failed; each said so and the session went on
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "/bogus" in errors[0] and "missing.png" in errors[1]
    assert "(cleared" in result.stderr and "> " not in result.stderr  # no prompts when stdin is a pipe
    saved, later = json.loads(before.read_text()), json.loads(after.read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "user", "assistant"]
    assert saved["messages"][0] == {"role": "user", "content": FIRST, "images": [str(images["square"])]}
    assert [m["content"] for m in later["messages"]][0] == "hello" and len(later["messages"]) == 2
    answers = [saved["messages"][1]["content"], saved["messages"][3]["content"], later["messages"][1]["content"]]
    assert result.stdout == "".join(answer + "\n" for answer in answers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after.json", "before.json"]  # no temp files left

    stats = json.loads(result.stderr.strip().splitlines()[-1])
    assert [turn["image_tokens"] > 0 for turn in stats["turns"]] == [True, False, False]
    assert stats["image_tokens"] == stats["turns"][0]["image_tokens"]  # encoded once, in the first turn
    last = stats["turns"][2]
    assert stats["n_past"] == last["prompt_tokens"] + last["completion_tokens"]  # /clear emptied the cache
    assert stats["text_tokens"] == sum(t["prompt_tokens"] - t["image_tokens"] for t in stats["turns"])


def test_first_chat_answer_equals_ask(tiny_pair, images):
    model, image = str(tiny_pair[0]), str(images["photo"])
    chat = chat_cli("-m", model, "-i", image, "-n", str(N), input=FIRST + "\n")
    ask = CliRunner().invoke(app, ["ask", "-t", "1", "-m", model, "-i", image, "-n", str(N), FIRST])
    assert chat.exit_code == 0 and ask.exit_code == 0, (chat.stderr, ask.stderr)
    assert chat.stdout == ask.stdout


def test_chat_input_errors(tiny_pair, images, tmp_path):
    model = str(tiny_pair[0])
    stdin_image = chat_cli("-m", model, "-i", "-", input="hi\n")
    assert stdin_image.exit_code == 1 and "stdin" in stdin_image.stderr and stdin_image.stdout == ""
    to_folder = chat_cli("-m", model, "-n", "2", input=f"hi\n/save {tmp_path}\n/image\n/save\n")
    lines = [line for line in to_folder.stderr.splitlines() if line.startswith("error: ")]
    assert to_folder.exit_code == 1 and len(lines) == 3
    assert "is a folder" in lines[0] and "/image needs a path" in lines[1] and "/save needs" in lines[2]
    too_many = chat_cli("-m", model, "-n", "2", input="<image> here?\n")
    assert too_many.exit_code == 1 and "1 <image> markers but 0 images" in too_many.stderr


# --- the installed entry point ----------------------------------------------------------------


def test_chat_through_a_real_pipe(tiny_pair, images):
    run = subprocess.run(
        [
            str(SMOLCLI),
            "chat",
            "-t",
            "1",
            "-m",
            str(tiny_pair[0]),
            "-i",
            str(images["square"]),
            "-n",
            str(N),
            "--stats",
        ],
        input=f"{FIRST}\n{SECOND}\n".encode(),
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stderr.decode().strip().splitlines()[-1])
    assert len(stats["turns"]) == 2 and stats["turns"][1]["image_tokens"] == 0
    assert stats["images_encoded"] > 0 and stats["image_tokens"] == stats["turns"][0]["image_tokens"]
    assert run.stdout.count(b"\n") >= 2


def test_ctrl_c_at_the_prompt_exits_130_without_a_traceback(tiny_pair):
    process = subprocess.Popen(
        [str(SMOLCLI), "chat", "-t", "1", "-m", str(tiny_pair[0])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    process.stdin.write(b"/help\n")
    process.stdin.flush()
    seen = b""
    while b"/exit" not in seen:  # the help has been printed: chat now waits for the next line
        line = process.stderr.readline()
        assert line, seen
        seen += line
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.decode().strip() == "interrupted"
