"""`video_url` content parts on the OpenAI-compatible server: the official openai client against a real server
on 127.0.0.1 (the app under uvicorn in a thread, as tests/test_serve.py runs its own configurations)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from test_serve import ThreadServer, assert_error
from video_clips import make_audio_only, make_clip

import smolcli
from smolcli.api.model import Model
from smolcli.api.options import LoadOptions
from smolcli.serve import ServeLimits, ServeSettings

QUESTION = "What happens?"
CTX = 512


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("served-clips")
    return {
        "mp4": make_clip(folder / "a.mp4", 3, 10, 64, 48),
        "long": make_clip(folder / "long.mkv", 80, 1, 32, 24),
        "audio": make_audio_only(folder / "sound.m4a"),
    }


@pytest.fixture(scope="module")
def video_pair(converted):
    return converted("F16", "F16", "SmolVLM2").model.parent


@pytest.fixture(scope="module")
def allowed(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("allowed-videos")


@pytest.fixture(scope="module")
def video_server(video_pair, allowed):
    settings = ServeSettings(allow_files=allowed, limits=ServeLimits(max_tokens=64), log_requests=False)
    # a fixed 512-token context: 64 frames (576 image tokens) cannot fit it
    started = ThreadServer(Model.open(video_pair, LoadOptions(threads=2, ctx=CTX)), settings)
    started.wait_ready()
    yield started.running
    started.stop()


def video_uri(path: Path, kind: str = "mp4") -> str:
    return f"data:video/{kind};base64," + base64.b64encode(path.read_bytes()).decode()


def video_message(url: str, text: str = QUESTION) -> dict:
    return {
        "role": "user",
        "content": [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": text}],
    }


def test_a_video_url_answers_as_model_ask_and_the_follow_up_continues(video_server, video_pair, clips):
    client = video_server.client()
    messages = [video_message(video_uri(clips["mp4"]))]
    first = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6)
    with smolcli.load(video_pair, threads=2, ctx=CTX) as model:
        asked = model.ask(QUESTION, video=clips["mp4"], max_tokens=6)
    assert first.choices[0].message.content == asked.text
    assert first.usage.prompt_tokens == asked.usage.prompt_tokens
    details = first.model_extra["smolcli"]
    assert details["images_encoded"] + details["image_cache_hits"] == 3  # one global view per frame
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And then?"},
    ]
    second = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4)
    details = second.model_extra["smolcli"]
    assert details["conversation"] == "continued" and details["images_encoded"] == details["image_cache_hits"] == 0
    # streamed, the same clip: the same text
    pieces = client.chat.completions.create(
        model="tiny", messages=[video_message(video_uri(clips["mp4"]))], max_tokens=6, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in pieces if chunk.choices) == asked.text


def test_a_history_with_a_clip_is_replayed(video_server, clips):
    """A conversation this server has not kept: its earlier clip is evaluated again, frames from the cache."""
    client = video_server.client()
    messages = [
        video_message(video_uri(clips["mp4"])),
        {"role": "assistant", "content": "Shapes move."},
        {"role": "user", "content": "Which colour?"},
    ]
    answer = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4)
    details = answer.model_extra["smolcli"]
    assert details["conversation"] == "replayed" and details["images_encoded"] + details["image_cache_hits"] == 3


def test_a_local_clip_only_under_allow_files(video_server, clips, allowed):
    inside = allowed / "inside.mp4"
    inside.write_bytes(clips["mp4"].read_bytes())
    client = video_server.client()
    answer = client.chat.completions.create(model="tiny", messages=[video_message(inside.as_uri())], max_tokens=2)
    assert answer.choices[0].finish_reason in ("stop", "length")
    status, _, body = video_server.request(
        "POST", "/v1/chat/completions", {"messages": [video_message(clips["mp4"].as_uri())]}
    )
    assert_error(status, body, 403, "video_path_not_allowed", "messages[0].content[0].video_url")


BAD = {
    "not-base64": ("data:video/mp4;base64,!!", 400, "invalid_video_url"),
    "not-a-video": ("data:video/mp4;base64," + base64.b64encode(b"just some text").decode(), 400, "invalid_video"),
    "no-data-uri": ("https://example.com/clip.mp4", 400, "invalid_video_url"),
}


@pytest.mark.parametrize("case", [*BAD, "audio-only", "truncated", "missing-file", "two-videos", "too-long"])
def test_a_bad_clip_is_a_4xx_and_the_server_goes_on(case, video_server, clips, allowed):
    param = "messages[0].content[0].video_url"
    if case in BAD:
        url, expected, code = BAD[case]
        body = {"messages": [video_message(url)]}
    elif case == "audio-only":
        body, expected, code = {"messages": [video_message(video_uri(clips["audio"], "mp4"))]}, 400, "invalid_video"
    elif case == "truncated":
        cut = clips["mp4"].read_bytes()[:3000]
        url = "data:video/mp4;base64," + base64.b64encode(cut).decode()
        body, expected, code, param = {"messages": [video_message(url)]}, 400, None, None
    elif case == "missing-file":
        body, expected, code = {"messages": [video_message((allowed / "none.mp4").as_uri())]}, 400, "video_not_found"
    elif case == "two-videos":
        parts = [{"type": "video_url", "video_url": {"url": video_uri(clips["mp4"])}}] * 2
        body = {"messages": [{"role": "user", "content": parts}]}
        expected, code, param = 400, "too_many_videos", "messages[0].content[1]"
    else:  # 64 frames of 80 s: more than the server's context holds with the answer
        body = {"messages": [video_message(video_uri(clips["long"], "x-matroska"))], "max_tokens": 64}
        expected, code, param = 400, "context_length_exceeded", "messages"
    status, _, answer = video_server.request("POST", "/v1/chat/completions", body)
    error = assert_error(status, answer, expected, code, param)
    assert "Traceback" not in error["message"] and "\n" not in error["message"]
    if case == "too-long":
        assert "frames" in error["message"] and "--max-frames" in error["message"]  # the server's own option
    good = video_server.client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello?"}], max_tokens=2
    )
    assert good.choices[0].finish_reason in ("stop", "length")


def test_the_servers_max_frames_and_fps_sample_every_clip(video_pair, clips):
    """--max-frames / --fps hold for live turns and for replayed histories alike."""
    limits = ServeLimits(max_tokens=8, max_frames=2, video_fps=2.0)
    started = ThreadServer(
        Model.open(video_pair, LoadOptions(threads=2)), ServeSettings(limits=limits, log_requests=False)
    )
    try:
        started.wait_ready()
        client = started.running.client()
        first = client.chat.completions.create(
            model="tiny", messages=[video_message(video_uri(clips["mp4"]))], max_tokens=2
        )
        replayed = client.chat.completions.create(
            model="tiny",
            messages=[
                video_message(video_uri(clips["mp4"])),
                {"role": "assistant", "content": "Shapes move."},
                {"role": "user", "content": "And then?"},
            ],
            max_tokens=2,
        )
    finally:
        started.stop()
    for answer in (first, replayed):
        details = answer.model_extra["smolcli"]
        assert details["images_encoded"] + details["image_cache_hits"] == 2, details
    assert replayed.model_extra["smolcli"]["conversation"] == "replayed"
