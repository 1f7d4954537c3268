"""Clips and video options that waited forever, dropped a clip without a word, or said the wrong thing."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
from faults import error_line, smolcli
from video_clips import make_clip

from smolcli.errors import BadInput
from smolcli.runtime.video.clip import VideoClip, VideoSampling
from smolcli.runtime.vision.images import FIFO_WAIT_SECONDS
from smolcli.synthetic.clips import write_timed_clip


@pytest.fixture(scope="module")
def video_model(converted):
    return converted("F16", "F16", "SmolVLM2").model


def test_a_sparse_clip_says_its_timing_is_broken(tmp_path):
    clip = write_timed_clip(tmp_path / "sparse.mkv", [0, 1, 277 * 3600])
    sampling = VideoSampling(1.0, 64, 384, 384)
    with VideoClip(clip) as opened, pytest.raises(BadInput) as refused:
        opened.frames(opened.plan(sampling), sampling)
    message = str(refused.value)
    assert "3 frames decoded" in message and "277 h" in message and "constant frame rate" in message, message


def test_two_clips_are_refused_not_one_dropped(video_model, tmp_path):
    first = make_clip(tmp_path / "a.mp4", 1, 4, 32, 24)
    second = make_clip(tmp_path / "b.mkv", 1, 4, 32, 24)
    error_line(smolcli("ask", "-m", video_model, "--video", first, "--video", second, "hi"), "--video", "2 times")


@pytest.mark.parametrize("fps", ["inf", "nan", "-1", "0"])
def test_fps_must_be_finite_and_positive(video_model, tmp_path, fps):
    clip = make_clip(tmp_path / "a.mp4", 1, 4, 32, 24)
    error_line(smolcli("ask", "-m", video_model, "--video", clip, "--fps", fps, "hi"), "--fps", fps)


def test_a_fifo_nothing_writes_to_gives_up_like_an_image_does(video_model, tmp_path):
    fifo = tmp_path / "clip.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    done = smolcli("ask", "-m", video_model, "--video", fifo, "hi", timeout=FIFO_WAIT_SECONDS + 60)
    took = time.monotonic() - started
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(fifo) in lines[0] and "named pipe" in lines[0]
    assert FIFO_WAIT_SECONDS <= took < FIFO_WAIT_SECONDS + 30


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs")
def test_a_clip_written_into_a_fifo_is_read(video_model, tmp_path):
    clip = make_clip(tmp_path / "a.mp4", 1, 4, 32, 24)
    fifo = tmp_path / "clip.fifo"
    os.mkfifo(fifo)

    def write():
        with open(fifo, "wb") as pipe:
            pipe.write(clip.read_bytes())

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    done = smolcli("ask", "-m", video_model, "--video", fifo, "-n", "2", "hi", timeout=120)
    writer.join(timeout=10)
    assert done.returncode == 0, done.stderr
