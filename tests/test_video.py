"""Video clips: sampling from the container's metadata, frames as one global view each, the cache, bad input."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner
from video_clips import frame_pixels, make_audio_only, make_clip

import smolcli
from smolcli.cli.app import app
from smolcli.errors import BadInput, ContextFull
from smolcli.models.smolvlm_video import number_in_words, video_text
from smolcli.runtime.video.clip import VideoSampling, open_clip, sample_indices

from cli_checks import one_line_error

SAMPLING = VideoSampling(fps=1, max_frames=64, video_size=96, frame_size=48)  # the tiny model's sizes


@pytest.fixture(scope="session")
def clips(workdir) -> dict[str, Path]:
    folder = workdir / "clips"
    folder.mkdir(exist_ok=True)
    specs = {
        "mp4": ("a.mp4", 3, 10, 64, 48),
        "webm": ("b.webm", 2.5, 8, 40, 60),
        "gif": ("c.gif", 1.5, 10, 32, 32),
        "mkv": ("d.mkv", 5, 6, 50, 40),
        "mov": ("e.mov", 70, 2, 32, 24),
    }
    return {key: make_clip(folder / name, *spec) for key, (name, *spec) in specs.items()}


@pytest.fixture(scope="session")
def video_pair(converted):
    result = converted("F16", "F16", "SmolVLM2")
    return result.model.parent


def test_sampling_rule_steps():
    # fewer frames than seconds: evenly spread, first and last frame included
    assert sample_indices(30, 10.0, 3.0, 1, 64) == [0, 14, 29]
    # longer than max_frames seconds (plus the two skipped seconds): the first and last second skipped
    assert sample_indices(140, 2.0, 70.0, 1, 64)[0] == 2 and len(sample_indices(140, 2.0, 70.0, 1, 64)) == 64
    assert sample_indices(15, 10.0, 1.5, 1, 64) == [0, 14]  # under 2 s: round(1.5) = 2 frames
    assert sample_indices(5, 10.0, 0.5, 1, 64) == [0]  # at least one frame


@pytest.mark.parametrize("kind", ["mp4", "webm", "gif", "mkv", "mov"])
def test_frames_come_at_their_stream_times(clips, kind):
    with open_clip(clips[kind]) as clip:
        plan = clip.plan(SAMPLING)
        frames = clip.frames(plan, SAMPLING)
    assert [f.index for f in frames] == list(plan.indices)
    # MKV and WebM keep milliseconds: the stream time, within half a millisecond of frame number / rate
    assert [f.timestamp for f in frames] == pytest.approx([i / plan.fps for i in plan.indices], abs=5e-4)
    assert all((f.image.width, f.image.height) == (48, 48) for f in frames)
    assert len({f.image.pixels for f in frames}) == len(frames)  # every sampled frame a different picture


def test_variable_frame_rate_timestamps_are_the_frames_own(workdir):
    import av

    path = workdir / "vfr.mkv"
    times_ms = [0, 100, 700, 800, 2500, 3000]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.time_base = Fraction(1, 1000)
        for number, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(frame_pixels(number * 9, 32, 32), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    sampling = VideoSampling(fps=10, max_frames=64, video_size=96, frame_size=48)
    with open_clip(path) as clip:
        plan = clip.plan(sampling)
        frames = clip.frames(plan, sampling)
    assert {round(f.timestamp, 3) for f in frames} <= {t / 1000 for t in times_ms}
    assert frames[-1].timestamp == pytest.approx(3.0)


def test_ten_hour_clip_is_planned_and_seeked_not_decoded(workdir):
    """One frame a minute for ten hours: 64 frames are decoded by seeking, not 600 through."""
    import time

    import av

    path = make_clip(workdir / "ten-hours.mkv", 0, 1, 16, 16)  # replaced below
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(1, 60))
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        stream.options = {"g": "10"}  # a keyframe every ten minutes, as a seekable file has
        for number in range(600):
            frame = av.VideoFrame.from_ndarray(frame_pixels(number, 16, 16), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    started = time.perf_counter()
    with open_clip(path) as clip:
        plan = clip.plan(SAMPLING)
        assert plan.duration == pytest.approx(36000, rel=1e-3) and plan.n_frames == 64
        frames = clip.frames(plan, SAMPLING)
    assert len(frames) == 64
    assert [f.timestamp for f in frames] == pytest.approx([i * 60 for i in plan.indices], abs=1e-3)
    assert time.perf_counter() - started < 20


def test_prompt_text_is_transformers_layout():
    text = video_text([0.0, 61.5], 75.9)
    assert text == (
        "You are provided the following series of two frames from a 0:01:15 [H:MM:SS] video.\n"
        "\nFrame from 00:00:<fake_token_around_image><global-img>\x00frame\x00<fake_token_around_image>"
        "\nFrame from 01:01:<fake_token_around_image><global-img>\x00frame\x00<fake_token_around_image>\n\n"
    )
    assert number_in_words(64) == "sixty-four"
    assert number_in_words(121) == "one hundred and twenty-one"


def test_second_question_about_a_clip_encodes_nothing(video_pair, clips):
    with smolcli.load(video_pair, threads=2) as model:
        first = model.ask("What happens?", video=clips["mp4"], max_tokens=4)
        second = model.ask("And then?", video=clips["mp4"].read_bytes(), max_tokens=4)
    assert first.video["frames_used"] == 3 and first.video["timestamps_s"] == [0.0, 1.4, 2.9]
    assert first.video["duration_s"] == 3.0
    assert first.usage.images_encoded == 3 and first.usage.image_cache_hits == 0
    assert second.usage.images_encoded == 0 and second.usage.image_cache_hits == 3
    assert first.usage.image_tokens == 3 * 9  # one global view of 9 tokens per frame, no tiles


def test_fps_and_max_frames_override_and_images_share_the_prompt(video_pair, clips, images):
    with smolcli.load(video_pair, threads=2) as model:
        answer = model.ask(
            "<image>Is this in the clip?", images=[images["square"]], video=clips["mov"], max_frames=5, max_tokens=2
        )
        faster = model.ask("What happens?", video=clips["mp4"], fps=2, max_tokens=2)
    assert answer.video["frames_used"] == 5
    assert answer.usage.image_tokens == 5 * 9 + 5 * 9  # the image's 4 tiles and global view, then 5 frames
    assert faster.video["frames_used"] == 6


def test_a_clip_too_long_for_the_context_says_how_many_frames_fit(video_pair, clips):
    with smolcli.load(video_pair, threads=2, ctx=256) as model:
        with pytest.raises(ContextFull) as refused:
            model.ask("What happens?", video=clips["mov"], max_frames=64, max_tokens=16)
    assert "max_frames=" in str(refused.value)
    fits = int(str(refused.value).split("max_frames=")[1].split()[0])
    with smolcli.load(video_pair, threads=2, ctx=256) as model:
        assert (
            model.ask("What happens?", video=clips["mov"], max_frames=fits, max_tokens=16).video["frames_used"] == fits
        )


def test_ask_json_and_v1_note(video_pair, tiny_pair, clips):
    runner = CliRunner()
    result = runner.invoke(
        app, ["ask", "-m", str(video_pair), "--video", str(clips["gif"]), "--json", "--max-tokens", "2", "Hi"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["video"]["frames_used"] == 2 and report["video"]["timestamps_s"] == [0.0, 1.4]
    assert "not trained on video" not in result.stderr
    v1 = runner.invoke(app, ["ask", "-m", str(tiny_pair[0]), "--video", str(clips["gif"]), "--max-tokens", "2", "Hi"])
    assert v1.exit_code == 0, v1.output
    assert v1.stderr.count("not trained on video") == 1


def _zero_frame_clip(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        container.start_encoding()  # the header and its video stream, and not one frame
    return path


@pytest.mark.parametrize("case", ["folder", "missing", "not-video", "truncated", "audio", "zero-frames"])
def test_bad_clips_fail_in_one_line(case, video_pair, clips, workdir, tmp_path):
    made = {
        "folder": lambda: tmp_path,
        "missing": lambda: tmp_path / "nothing.mp4",
        "not-video": lambda: (tmp_path / "notes.mp4").write_text("just text\n") and tmp_path / "notes.mp4",
        "truncated": lambda: (
            (tmp_path / "cut.mp4").write_bytes(clips["mp4"].read_bytes()[:3000]) and tmp_path / "cut.mp4"
        ),
        "audio": lambda: make_audio_only(tmp_path / "sound.m4a"),
        "zero-frames": lambda: _zero_frame_clip(tmp_path / "empty.mkv"),
    }
    path = made[case]()
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, ["ask", "-m", str(video_pair), "--video", str(path), "Hi"])
    one_line_error(result, str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing left behind


def test_library_rejects_a_bad_clip_as_bad_input(video_pair, tmp_path):
    with smolcli.load(video_pair, threads=2) as model:
        with pytest.raises(BadInput):
            model.ask("What happens?", video=b"not a video at all")


def test_frames_go_through_the_onnx_encoder_under_auto_and_mtmd_on_request(video_pair, clips):
    answers = {}
    for engine_name in ("auto", "mtmd"):
        with smolcli.load(video_pair, threads=2, vision_engine=engine_name, embedding_cache=False) as model:
            answers[engine_name] = model.ask("What happens?", video=clips["mp4"], max_tokens=1, logprobs=3)
            frames = model.pair.frame_vision()
            assert frames.onnx == (engine_name == "auto")
            assert (frames.ctx is None) == (engine_name == "auto")  # no mtmd context for the frames on ONNX
            assert model.engine.mtmd_ctx is None  # the engine's own (for images) is not loaded for a clip either way
    assert answers["auto"].vision_engine == "onnx-int8" and answers["mtmd"].vision_engine == "mtmd"
    for answer in answers.values():
        assert answer.usage.images_encoded == 3 and answer.usage.image_tokens == 3 * 9
    # int8 frames against the F16 mmproj through mtmd: the same next token
    assert answers["auto"].logprobs[0].id == answers["mtmd"].logprobs[0].id


def test_convert_writes_the_checkpoints_video_sampling_and_info_shows_it(converted, tmp_path):
    """The checkpoint's video_sampling goes into the mmproj (fps, max frames, the first resize's edge: the
    preprocessor's size, which overrides video_size in transformers); a file without it (SmolVLM v1) gives the
    releases' 1 fps and 64; --fps and --max-frames still win; `info` shows it; a malformed one fails convert."""
    from smolcli.api.video import video_sampling
    from smolcli.convert import convert_checkpoint
    from smolcli.runtime.gguf.gguf_file import read_gguf
    from smolcli.synthetic.random_checkpoint import write_random_checkpoint

    checkpoint = write_random_checkpoint(tmp_path / "ckpt", "tiny", "SmolVLM2", "F16", seed=1)
    config = json.loads((checkpoint / "preprocessor_config.json").read_text())
    config["video_sampling"].update(fps=2, max_frames=8)
    (checkpoint / "preprocessor_config.json").write_text(json.dumps(config))
    pair = convert_checkpoint(checkpoint, tmp_path / "pair", "F16", "F16", name="tiny-sampling")
    mmproj = read_gguf(pair.mmproj)
    assert (mmproj.metadata["smolcli.video.fps"], mmproj.metadata["smolcli.video.max_frames"]) == (2.0, 8)
    assert video_sampling(mmproj, None, None) == VideoSampling(2.0, 8, 96, 48)
    assert video_sampling(mmproj, 1.5, 3) == VideoSampling(1.5, 3, 96, 48)
    v1 = read_gguf(converted("F16", "F16", "SmolVLM").mmproj)
    assert "smolcli.video.fps" not in v1.metadata
    assert video_sampling(v1, None, None) == VideoSampling(1.0, 64, 96, 48)
    shown = CliRunner().invoke(app, ["info", str(pair.mmproj)])
    assert shown.exit_code == 0 and "video sampling    2 fps, at most 8 frames, frames to 96 px" in shown.stdout
    assert json.loads(CliRunner().invoke(app, ["info", str(pair.mmproj), "--json"]).stdout)["mmproj"][
        "video_sampling"
    ] == {"fps": 2.0, "max_frames": 8, "size": 96}
    assert "not in the file" in CliRunner().invoke(app, ["info", str(v1.path)]).stdout
    config["video_sampling"]["fps"] = "fast"
    (checkpoint / "preprocessor_config.json").write_text(json.dumps(config))
    one_line_error(CliRunner().invoke(app, ["convert", str(checkpoint), "-o", str(tmp_path / "bad")]), "video_sampling")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
