"""Values nothing used to check: thread counts, sampling values, image sizes, output names, a refused image in chat."""

from __future__ import annotations

import pytest
from faults import error_line, in_process, smolcli

import smolcli as library
from smolcli.errors import BadInput
from smolcli.runtime.decoding.sampling import SamplingOptions
from smolcli.util.threads import max_threads, usable_cores


@pytest.mark.parametrize("command", ["ask", "chat", "convert", "bench", "pull"])
def test_thread_counts_beyond_the_machine_are_refused_before_any_work(command, tiny_pair, tmp_path, numpy_checkpoint):
    outdir = tmp_path / "out"
    args = {
        "ask": ["ask", "-m", tiny_pair[0], "hi"],
        "chat": ["chat", "-m", tiny_pair[0]],
        "convert": ["convert", numpy_checkpoint(), "-o", outdir],
        "bench": ["bench", "--shape", "tiny"],
        "pull": ["pull", "smolvlm-256m"],
    }[command]
    threads = 100000 if command != "ask" else max_threads() + 1
    done = smolcli(*args, "--threads", threads, input="", env={"HF_HUB_OFFLINE": "1"})
    error_line(done, f"--threads {threads}", f"--threads {max_threads()}", f"{usable_cores()} cores")
    assert not outdir.exists()


def test_thread_rule_in_the_library(tiny_pair):
    with pytest.raises(BadInput, match="at most"):
        library.load(tiny_pair[0], threads=max_threads() + 1)
    with pytest.raises(BadInput, match="at least 1"):
        library.load(tiny_pair[0], threads=0)


@pytest.mark.parametrize(
    "flag, value, flag_name",
    [
        ("--temperature", "-1", "--temperature"),
        ("--temperature", "nan", "--temperature"),
        ("--temperature", "inf", "--temperature"),
        ("--top-p", "nan", "--top-p"),
        ("--top-p", "0", "--top-p"),
        ("--top-k", "-1", "--top-k"),
        ("--seed", "-5", "--seed"),
    ],
)
def test_every_sampling_value_follows_one_rule(tiny_pair, flag, value, flag_name):
    error_line(in_process("ask", "-m", tiny_pair[0], flag, value, "hi"), flag_name, value)


def test_sampling_rule_in_the_library():
    for bad in ({"temperature": -1.0}, {"temperature": float("nan")}, {"top_p": float("inf")}, {"top_k": 1.5}):
        with pytest.raises(BadInput):
            SamplingOptions(**bad)
    assert SamplingOptions(temperature=0.0).greedy and not SamplingOptions(temperature=0.7).greedy


def test_a_huge_image_size_is_refused_before_mtmd_sees_it(tiny_pair, images):
    line = error_line(smolcli("ask", "-m", tiny_pair[0], "-i", images["square"], "--image-size", "100000", "hi"))
    assert "--image-size 100000 is too large" in line and "or less" in line


@pytest.mark.parametrize("name", ["../../x", "a b/c", "..", ".hidden", "-dash", "/abs", "x\ny"])
def test_output_names_that_leave_the_folder_are_refused_before_any_work(name, numpy_checkpoint, tmp_path):
    outdir = tmp_path / "deep" / "out"
    done = in_process("convert", numpy_checkpoint(), "-o", outdir, "--name", name)
    error_line(done, "--name")
    assert not (tmp_path / "deep").exists(), "work started, or files landed outside --outdir"
    assert not list(tmp_path.parent.glob("x-*.gguf"))


def test_chat_drops_an_image_it_refused_and_goes_on(tiny_pair, images):
    # at 4x the tiny model's edge the image needs 585 tokens, more than the 256-token context; "Hello" needs none
    lines = f"/image {images['square']}\nDescribe it.\nHello\n"
    done = smolcli("chat", "-m", tiny_pair[0], "--ctx", "256", "--image-size", "384", "-n", "3", input=lines)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the image attached to it was dropped" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert done.returncode == 1  # one message failed
    assert done.stdout.count("\n") == 1, "the message after the refused image got no answer"


def test_a_non_utf8_byte_in_a_prompt_or_chat_line(tiny_pair):
    import os
    import subprocess
    import sys

    prompt = b"caf\xe9 ?"
    done = subprocess.run(
        [sys.executable, "-m", "smolcli", "ask", "-m", str(tiny_pair[0]), "-n", "2", os.fsdecode(prompt)],
        capture_output=True,
        text=True,
    )
    error_line(done, "not UTF-8", "character 4")
    chat = subprocess.run(
        [sys.executable, "-m", "smolcli", "chat", "-m", str(tiny_pair[0]), "-n", "2"],
        input=b"caf\xe9\nHello\n",
        capture_output=True,
    )
    errors = [line for line in chat.stderr.decode().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not UTF-8" in errors[0], chat.stderr
    assert b"Traceback" not in chat.stderr
    assert chat.stdout.count(b"\n") == 1, "the chat ended at the bad line instead of answering the next"
