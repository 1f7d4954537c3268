"""Video in a conversation: Chat.send(video=...), /video in `smolcli chat`, and a video turn's numbers against ask's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from video_clips import make_clip

import smolcli
from smolcli.cli.app import app
from smolcli.errors import BadInput, ContextFull


@pytest.fixture(scope="session")
def chat_clips(workdir) -> dict[str, Path]:
    folder = workdir / "chat-clips"
    folder.mkdir(exist_ok=True)
    return {
        "short": make_clip(folder / "short.mp4", 3, 10, 64, 48),  # 3 frames sampled
        "long": make_clip(folder / "long.mkv", 40, 2, 32, 24),  # 40 frames sampled
    }


@pytest.fixture(scope="session")
def video_pair(converted):
    return converted("F16", "F16", "SmolVLM2").model.parent


def _first_logprobs(answer) -> dict[int, float]:
    return {item.id: item.logprob for item in answer.logprobs[0].top_logprobs}


def test_a_chat_video_turn_gives_what_ask_gives_and_follow_ups_keep_it(video_pair, chat_clips, images):
    """The first turn's prompt is ask's prompt: the same first-token distribution; later turns evaluate only themselves."""
    with smolcli.load(video_pair, threads=2) as model:
        asked = model.ask(
            "<image>What happens?", images=[images["square"]], video=chat_clips["short"], max_tokens=3, logprobs=5
        )
        chat = model.chat(max_tokens=3)
        first = chat.send("<image>What happens?", images=[images["square"]], video=chat_clips["short"], logprobs=5)
        after_first = chat.n_past
        second = chat.send("And then?", logprobs=5)
        after_second = chat.n_past
        transcript = chat.transcript()
        chat.close()
    assert first.video == asked.video and first.video["frames_used"] == 3
    assert first.usage.prompt_tokens == asked.usage.prompt_tokens
    assert first.usage.image_tokens == asked.usage.image_tokens == 5 * 9 + 3 * 9  # the image's 5 views, 3 frames
    ours, theirs = _first_logprobs(first), _first_logprobs(asked)
    assert ours.keys() == theirs.keys()
    assert max(abs(ours[token] - theirs[token]) for token in ours) < 1e-4
    assert first.tokens == asked.tokens
    # the follow-up: only its own text evaluated, the frames stayed in the cache
    assert second.usage.image_tokens == 0 and second.usage.images_encoded == 0
    assert after_second == after_first + second.usage.prompt_tokens + second.usage.completion_tokens
    assert second.usage.prompt_tokens < len("And then?") * 4 < first.usage.prompt_tokens
    assert second.video is None
    assert transcript["messages"][0]["video"] == str(chat_clips["short"])
    assert "video" not in transcript["messages"][2]


def test_a_follow_up_answers_from_the_clip_in_the_cache(video_pair, chat_clips):
    """The second turn's logits after a video turn differ from the same turn after a text-only first turn."""
    with smolcli.load(video_pair, threads=2) as model:
        with model.chat(max_tokens=2) as with_clip:
            with_clip.send("What happens?", video=chat_clips["short"])
            seen = _first_logprobs(with_clip.send("And then?", logprobs=5))
        with model.chat(max_tokens=2) as without:
            without.send("What happens?")
            unseen = _first_logprobs(without.send("And then?", logprobs=5))
    assert seen != unseen


def test_replay_of_a_video_turn_evaluates_the_clip_as_send_does(video_pair, chat_clips):
    """A client that sends the whole conversation (the server): the clip in an earlier turn adds the tokens it adds
    to a live turn, its frames come from the embedding cache, and the next turn goes on from there."""
    question = "What happens?"
    with smolcli.load(video_pair, threads=2) as model:
        with model.chat(max_tokens=2) as lived, model.chat(max_tokens=2) as text_only:
            clip_tokens = lived.send(question, video=chat_clips["short"]).usage.prompt_tokens
            clip_tokens -= text_only.send(question).usage.prompt_tokens
        with model.chat(max_tokens=2) as replayed, model.chat(max_tokens=2) as plain:
            before = model.engine.counters.snapshot()
            with_clip = replayed.replay([(question, [], "Fine.", chat_clips["short"].read_bytes())])
            hits = model.engine.counters.cache_hits - before.cache_hits
            without = plain.replay([(question, [], "Fine.")])
            follow = replayed.send("And then?", logprobs=5)
            other = plain.send("And then?", logprobs=5)
            messages = replayed.messages
    assert with_clip - without == clip_tokens
    assert clip_tokens > 3 * 9  # the frames' tokens and the text around them ("Frame from 00:01:")
    assert hits == 3 and follow.usage.image_tokens == 0
    assert messages[0].video == "video bytes"
    assert _first_logprobs(follow) != _first_logprobs(other)  # the replayed frames are in the cache


def test_clear_and_configure_keep_working_after_a_video_turn(video_pair, chat_clips):
    with smolcli.load(video_pair, threads=2) as model:
        with model.chat(max_tokens=2) as chat:
            chat.send("What happens?", video=chat_clips["short"])
            chat.clear()
            assert chat.n_past == 0 and chat.messages == []
            chat.configure(max_tokens=3, temperature=0.0)
            answer = chat.send("Hello")
            assert answer.usage.image_tokens == 0 and answer.usage.completion_tokens <= 3
            assert chat.n_past == answer.usage.prompt_tokens + answer.usage.completion_tokens
            # a second clip after /clear goes from the embedding cache
            again = chat.send("What happens?", video=chat_clips["short"])
            assert again.usage.image_cache_hits == 3 and again.usage.images_encoded == 0


def test_a_clip_that_does_not_fit_the_conversation_says_how_many_frames_would(video_pair, chat_clips):
    with smolcli.load(video_pair, threads=2) as model:
        with model.chat(ctx=512, max_tokens=16) as chat:
            chat.send("Hello")
            used = chat.n_past
            with pytest.raises(ContextFull) as refused:
                chat.send("What happens?", video=chat_clips["long"])
            assert chat.n_past == used and len(chat.messages) == 2  # the turn left nothing behind
            message = str(refused.value)
            assert "40 frames" in message and "max_frames=" in message and "left of the 512-token context" in message
            fits = int(message.split("max_frames=")[1].split()[0])
            assert 0 < fits < 40
            answer = chat.send("What happens?", video=chat_clips["long"], max_frames=fits)
            assert answer.video["frames_used"] == fits


def test_a_bad_clip_in_a_chat_is_refused_and_the_chat_goes_on(video_pair, images):
    with smolcli.load(video_pair, threads=2) as model:
        with model.chat(max_tokens=2) as chat:
            with pytest.raises(BadInput, match="dropped"):
                chat.send("What happens?", images=[images["square"]], video=b"not a video at all")
            answer = chat.send("Hello")
    assert answer.usage.image_tokens == 0  # the image attached with the refused clip went with it


def test_chat_video_command(video_pair, chat_clips, tmp_path):
    lines = [
        f"/video {chat_clips['short']}",
        "What happens?",
        "And then?",
        f"/video {tmp_path / 'missing.mp4'}",
        f"/video {tmp_path}",
        "/video",
        f"/save {tmp_path / 'talk.json'}",
    ]
    result = CliRunner().invoke(
        app,
        ["chat", "-m", str(video_pair), "--max-tokens", "3", "--max-frames", "2", "--stats"],
        input="\n".join(lines) + "\n",
    )
    assert result.exit_code == 1, result.output  # the three bad /video lines
    assert len(result.stdout.strip("\n").split("\n")) == 2  # two answers, nothing else on stdout
    assert "(video attached to your next message" in result.stderr
    assert result.stderr.count("error:") == 3 and "Traceback" not in result.output
    assert (
        "no such video file" in result.stderr
        and "is a folder" in result.stderr
        and "/video needs a path" in result.stderr
    )
    stats = json.loads(result.stderr.strip().splitlines()[-1])
    assert stats["turns"][0]["image_tokens"] == 2 * 9 and stats["turns"][1]["image_tokens"] == 0
    saved = json.loads((tmp_path / "talk.json").read_text())
    assert saved["messages"][0]["video"] == str(chat_clips["short"])


def test_frames_of_one_clip_share_the_prompt_with_images_in_chat_as_in_ask(video_pair, chat_clips, images):
    """Images marked in the text and a video placed before them, in a later turn: the counts add up."""
    with smolcli.load(video_pair, threads=2) as model:
        with model.chat(max_tokens=2) as chat:
            chat.send("Hello")
            turn = chat.send("Compare <image> with the clip.", images=[images["square"]], video=chat_clips["short"])
    assert turn.usage.image_tokens == 5 * 9 + 3 * 9
    assert np.isfinite(turn.usage.prompt_tokens)
