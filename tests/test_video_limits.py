"""A clip's frames against the run's limits: progress lines on stderr while they are encoded, and --max-memory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner
from video_clips import make_clip

import smolcli
from smolcli.cli.app import app
from smolcli.errors import MemoryPlanRefused
from smolcli.runtime.video.clip import VideoClip
from smolcli.util.slow_note import PROGRESS_AFTER_VARIABLE

from cli_checks import one_line_error

PROGRESS_LINE = re.compile(r"^encoding frame (\d+) of (\d+), [\d.]+ s, about \d+ s left$", re.M)


@pytest.fixture(scope="session")
def limit_clips(workdir) -> dict[str, Path]:
    folder = workdir / "limit-clips"
    folder.mkdir(exist_ok=True)
    return {
        "short": make_clip(folder / "short.mp4", 3, 10, 64, 48),
        "long": make_clip(folder / "long.mkv", 12, 2, 32, 24),  # 12 frames sampled
    }


@pytest.fixture(scope="session")
def video_pair(converted):
    return converted("F16", "F16", "SmolVLM2").model.parent


def test_frame_progress_goes_to_stderr_and_leaves_stdout_as_it_was(video_pair, limit_clips, monkeypatch):
    args = ["ask", "-m", str(video_pair), "--video", str(limit_clips["short"]), "--max-tokens", "3", "What happens?"]
    runner = CliRunner()
    monkeypatch.setenv(PROGRESS_AFTER_VARIABLE, "60")
    quiet = runner.invoke(app, args)  # frames done within the threshold show no progress
    monkeypatch.setenv(PROGRESS_AFTER_VARIABLE, "0")
    loud = runner.invoke(app, args)
    assert quiet.exit_code == loud.exit_code == 0, loud.output
    assert loud.stdout == quiet.stdout and "frame" not in loud.stdout
    assert "frame" not in quiet.stderr
    assert [(int(i), int(n)) for i, n in PROGRESS_LINE.findall(loud.stderr)] == [(1, 3), (2, 3), (3, 3)]
    assert "decoding frame 3 of 3" in loud.stderr


def test_chat_video_progress_goes_to_stderr(video_pair, limit_clips, monkeypatch):
    monkeypatch.setenv(PROGRESS_AFTER_VARIABLE, "0")
    result = CliRunner().invoke(
        app,
        ["chat", "-m", str(video_pair), "--max-tokens", "2"],
        input=f"/video {limit_clips['short']}\nWhat happens?\n",
    )
    assert result.exit_code == 0, result.output
    assert len(PROGRESS_LINE.findall(result.stderr)) == 3
    assert "frame" not in result.stdout and len(result.stdout.strip("\n").split("\n")) == 1


def test_max_memory_plans_the_frames_and_refuses_before_decoding(video_pair, limit_clips, monkeypatch):
    clip = limit_clips["long"]
    with smolcli.load(video_pair, threads=2, max_memory="100G") as model:
        every, few = (model.ask("Hi", video=clip, max_frames=n, max_tokens=2).memory_plan["total"] for n in (12, 2))
    assert every > few  # the frames' buffers and their KV cache are in the plan
    limit = (every + few) // 2

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("a refused clip was decoded")

    with smolcli.load(video_pair, threads=2, max_memory=limit) as model:
        with monkeypatch.context() as patched:
            patched.setattr(VideoClip, "frames", no_decoding)
            with pytest.raises(MemoryPlanRefused) as refused:
                model.ask("Hi", video=clip, max_tokens=2)
        message = str(refused.value)
        assert "12 frames" in message and "max_frames=" in message, message
        fits = int(message.split("max_frames=")[1].split()[0])
        assert 2 <= fits < 12
        answer = model.ask("Hi", video=clip, max_frames=fits, max_tokens=2)
        assert answer.video["frames_used"] == fits and answer.memory_plan["total"] <= limit
        with pytest.raises(MemoryPlanRefused):
            model.ask("Hi", video=clip, max_frames=fits + 1, max_tokens=2)

    cli = CliRunner().invoke(
        app, ["ask", "-m", str(video_pair), "--video", str(clip), "--max-memory", str(limit), "--max-tokens", "2", "Hi"]
    )
    one_line_error(cli, "--max-frames", "--max-memory")


def test_max_memory_counts_a_chat_clip_against_the_conversation_plan(video_pair, limit_clips):
    """A chat's context is fixed when it starts: under the limit only the frames' buffers vary, frame by frame."""
    clip = limit_clips["long"]
    with smolcli.load(video_pair, threads=2, max_memory="100G") as model:
        with model.chat(max_tokens=2) as chat:
            four, five = (chat.send("Hi", video=clip, max_frames=n).memory_plan for n in (4, 5))
    assert four["n_ctx"] == five["n_ctx"] and five["total"] > four["total"]
    assert four["parts"]["vision_weights"]["cpu"] > 0  # the encoder is planned, though the chat began without images
    with smolcli.load(video_pair, threads=2, max_memory=four["total"]) as model:
        with model.chat(max_tokens=2) as chat:
            with pytest.raises(MemoryPlanRefused, match=r"max_frames=4\b"):
                chat.send("What happens?", video=clip)
            assert chat.n_past == 0
            answer = chat.send("What happens?", video=clip, max_frames=4)
    assert answer.video["frames_used"] == 4 and answer.memory_plan["total"] <= four["total"]
