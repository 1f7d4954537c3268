"""`smolcli watch`: real subprocesses watching real sources on 127.0.0.1 (MJPEG and RTSP camera stand-ins, a UDP
MPEG-TS stream, a folder, a video file) with the tiny converted pair; the schedule, mailbox and deadline as units."""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner
from video_clips import frame_pixels, make_clip
from watch_sources import MjpegCamera, RtspCamera, UdpStream

import smolcli
from smolcli.api.watch import open_feed, watch
from smolcli.api.watch.change import changed_fraction, thumbnail
from smolcli.api.watch.mailbox import Frame, Mailbox
from smolcli.api.watch.schedule import Schedule, until_deadline
from smolcli.cli.app import app
from smolcli.errors import BadInput

from cli_checks import default_sigint, one_line_error

SMOLCLI = Path(sys.executable).parent / "smolcli"
LINE_FIELDS = {"time", "source", "frame_time_s", "text", "skipped"}


def cli(*args: str):
    """In this process, for the errors that come before any model loads."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def watch_args(tiny_pair, source: str, *options: str) -> list[str]:
    return [str(SMOLCLI), "watch", source, "What is in the picture?", "-m", str(tiny_pair[0]), "-n", "4", *options]


def run_watch(tiny_pair, source: str, *options: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(watch_args(tiny_pair, source, *options), capture_output=True, text=True, timeout=timeout)


def json_lines(stdout: str) -> list[dict]:
    lines = [json.loads(line) for line in stdout.splitlines()]
    for line in lines:
        assert LINE_FIELDS <= set(line), line
        assert isinstance(line["text"], str) and isinstance(line["skipped"], int) and line["skipped"] >= 0
        dt.datetime.fromisoformat(line["time"])  # ISO 8601, with its offset
    return lines


def start_watch(tiny_pair, source: str, *options: str, stderr_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        watch_args(tiny_pair, source, *options),
        stdout=subprocess.PIPE,
        stderr=stderr_path.open("w"),
        text=True,
        preexec_fn=default_sigint,
    )


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)


@pytest.fixture
def camera():
    made = []

    def make(**settings) -> MjpegCamera:
        made.append(MjpegCamera(**settings))
        return made[-1]

    yield make
    for each in made:
        each.close()


# --- sources, end to end ----------------------------------------------------------------------


def test_every_second_for_three_events_from_an_mjpeg_camera(tiny_pair, camera):
    cam = camera(fps=20)
    result = run_watch(tiny_pair, cam.url, "--every", "1", "--max-events", "3")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert len(lines) == 3
    assert all(line["source"] == cam.url for line in lines)
    times = [line["frame_time_s"] for line in lines]
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[1:], strict=False)), times
    assert "open, 64x48 mjpeg" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("stand_in", [UdpStream, RtspCamera], ids=["udp-mpeg-ts", "rtsp-camera"])
def test_mpeg_ts_over_udp_and_rtsp(tiny_pair, stand_in):
    source = stand_in()
    try:
        result = run_watch(tiny_pair, source.url, "--max-events", "2")
    finally:
        source.close()
    assert result.returncode == 0, result.stderr
    assert len(json_lines(result.stdout)) == 2
    assert "open, 64x48 mpeg1video" in result.stderr
    if stand_in is RtspCamera:
        # RTP interleaved on the RTSP connection from the first SETUP: what passes NAT and firewalls
        assert source.transports and all(t.startswith("RTP/AVP/TCP") for t in source.transports), source.transports


def test_a_folder_answers_each_new_image_as_it_arrives(tiny_pair, tmp_path, images):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "before.png").write_bytes(images["square"].read_bytes())  # there at the start: not new
    stderr = tmp_path / "stderr"
    child = start_watch(tiny_pair, str(inbox), "--max-events", "3", stderr_path=stderr)
    try:
        wait_for(lambda: "watching for new images" in stderr.read_text(), 30, "the folder watch to start")
        arrived = []
        for number, key in enumerate(["photo", "wide", "tall"]):
            target = inbox / f"new{number}{images[key].suffix}"
            (inbox / "notes.txt").write_text("not an image")  # not an image's name: not looked at
            (inbox / "broken.jpg").write_bytes(b"not a JPEG")  # an image's name: tried, said on stderr, skipped
            target.write_bytes(images[key].read_bytes())
            arrived.append(str(target))
            time.sleep(0.6)
        out, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, stderr.read_text()
    lines = json_lines(out)
    assert [line["file"] for line in lines] == arrived
    assert all(line["source"] == str(inbox) for line in lines)
    assert stderr.read_text().count(f"{inbox / 'broken.jpg'}: not an image Pillow can read") == 1, stderr.read_text()


def test_a_video_file_read_as_fast_as_possible_is_sampled_on_its_own_clock_with_a_schema(tiny_pair, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=4, fps=10, width=64, height=48)
    schema = {
        "type": "object",
        "properties": {"person": {"type": "boolean"}, "count": {"type": "integer"}},
        "required": ["person", "count"],
    }
    options = ("--every", "1", "--no-realtime", "--json-schema", json.dumps(schema), "-n", "64")
    result = run_watch(tiny_pair, str(clip), *options)
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["frame_time_s"] for line in lines] == [0.0, 1.0, 2.0, 3.0]
    assert [line["skipped"] for line in lines] == [0, 0, 0, 0]  # read as fast as answers come: nothing dropped
    assert result.stderr.strip().endswith("the video ended")
    for line in lines:
        jsonschema.validate(line["json"], schema)
        assert line["json"] == json.loads(line["text"])


def test_a_video_file_plays_at_its_own_pace_from_the_first_frame_taken(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=2, fps=10, width=64, height=48)
    with open_feed(str(clip), realtime=True) as feed:
        time.sleep(1.0)  # the model loading: the file's clock has not started
        first = feed.next_frame(5)
        taken = time.monotonic()
        arrivals = []
        while not feed.ended:
            frame = feed.next_frame(0.01)
            if frame is not None:
                arrivals.append((frame.time_s, time.monotonic() - taken))
    assert first.time_s == 0.0
    assert len(arrivals) >= 10 and arrivals[-1][0] == 1.9
    # each frame comes at its own time after the first, never early (a busy CPU may make it late)
    assert all(wall >= seconds - 0.05 for seconds, wall in arrivals), arrivals


def test_the_library_yields_events_with_answers(tiny_pair, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=2, fps=10, width=64, height=48)
    with smolcli.load(tiny_pair[0], embedding_cache=False) as model:
        events = list(watch(model, "What is it?", str(clip), every=0.5, realtime=False, max_events=3, max_tokens=4))
        assert [event.frame_time_s for event in events] == [0.0, 0.5, 1.0]
        assert all(isinstance(event.answer, smolcli.Answer) and event.skipped == 0 for event in events)
        assert events[0].as_dict()["text"] == events[0].answer.text
        # a schema's answer cut short by max_tokens is said and skipped; the watch goes on to the file's end
        said = []
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        cut = watch(
            model, "n?", str(clip), every=1, realtime=False, json_schema=schema, max_tokens=2, report=said.append
        )
        assert list(cut) == []
        assert [line.split(" (")[0] for line in said if "no answer" in line] == [
            f"{clip}: no answer for the frame at 0 s",
            f"{clip}: no answer for the frame at 1 s",
        ]
        assert said[-1] == f"{clip}: the video ended"
        with pytest.raises(BadInput, match="every="):
            next(watch(model, "What is it?", str(clip), every=-1))
        # on change: a still scene (1 s grey, H.264's noise included), a light switched on, still again, a bar
        scenes = tmp_path / "scenes.mp4"
        grey, light = np.full((48, 64, 3), 60, np.uint8), np.full((48, 64, 3), 200, np.uint8)
        barred = light.copy()
        barred[:, :24] = 0  # more than a third of the picture
        write_clip(scenes, [grey] * 10 + [light] * 10 + [barred] * 10, fps=10)
        changes = watch(model, "What changed?", str(scenes), on_change=0.3, realtime=False, max_tokens=2)
        assert [event.frame_time_s for event in changes] == [0.0, 1.0, 2.0]


def write_clip(path: Path, pictures: list[np.ndarray], fps: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = pictures[0].shape[1], pictures[0].shape[0], "yuv420p"
        for picture in pictures:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())


def test_a_stream_that_drops_is_reopened_and_answers_again(tiny_pair, camera):
    cam = camera(fps=20, drop_after_s=1.0, down_for_s=1.0)
    result = run_watch(tiny_pair, cam.url, "--every", "0.5", "--max-events", "5")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert len(lines) == 5 and cam.connections >= 2
    assert "stream dropped (" in result.stderr and "reopening in 0.5 s" in result.stderr, result.stderr
    assert "stream back after" in result.stderr, result.stderr
    # answers about frames of the second connection: the last line is later than the camera's return
    assert dt.datetime.fromisoformat(lines[-1]["time"]).timestamp() > cam.back_at, (lines, cam.back_at)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the child's RSS from /proc")
def test_memory_stays_flat_over_hundreds_of_frames(tiny_pair, camera, tmp_path):
    cam = camera(fps=60, width=160, height=120)
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    child = subprocess.Popen(watch_args(tiny_pair, cam.url), stdout=stdout.open("w"), stderr=stderr.open("w"))
    try:
        # the first answer loads the model and makes its context: memory is measured from there on
        wait_for(lambda: stdout.read_text().count("\n") >= 1 or child.poll() is not None, 60, "the first answer")
        samples = []
        until = time.monotonic() + 5.0
        while time.monotonic() < until and child.poll() is None:
            samples.append(rss_bytes(child.pid))
            time.sleep(0.2)
        child.terminate()
        assert child.wait(30) == 143, stderr.read_text()
    finally:
        child.kill()
    lines = json_lines(stdout.read_text())
    frames_through = len(lines) + sum(line["skipped"] for line in lines)
    assert frames_through >= 200, (frames_through, cam.frames_sent)
    growth = max(samples) - samples[0]
    print(
        f"{frames_through} frames, {len(lines)} answers, RSS from {samples[0] / 2**20:.1f} MiB, +{growth / 2**20:.1f}"
    )
    # one frame in the mailbox, one being asked about: nothing grows with the number of frames
    assert growth < 20 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over {frames_through} frames"


def test_until_ends_the_watch(tiny_pair, tmp_path):
    started = time.monotonic()
    result = run_watch(tiny_pair, str(tmp_path), "--until", "2s")  # an empty folder: nothing to answer
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(", as asked") and time.monotonic() - started >= 2.0


# --- failures and signals ---------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_source_that_never_opens_is_one_line_and_exit_1(tiny_pair):
    url = f"http://127.0.0.1:{closed_port()}/video.mjpg"
    started = time.monotonic()
    result = run_watch(tiny_pair, url, "--open-timeout", "1.5")
    assert time.monotonic() - started < 15
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {url}: cannot open the stream (Connection refused) within 1.5 s"), lines[0]
    assert "--open-timeout" in lines[0]


@pytest.mark.parametrize(
    "source, words",
    [
        ("/no/such/camera", "no such file, folder or camera"),
        ("ftp://127.0.0.1/feed", "ftp:// is not a stream smolcli reads"),
        ("/dev/null", "/dev/null: cannot open the camera ("),  # a character device, opened as v4l2: not a camera
    ],
)
def test_a_source_that_is_not_one_is_one_line_and_exit_1(tmp_path, source, words):
    # the model does not exist either: the source is refused before a model is looked at
    one_line_error(cli("watch", source, "What?", "-m", str(tmp_path / "none.gguf"), "--open-timeout", "1"), words)


@pytest.mark.parametrize(
    "options, words",
    [
        (("--every", "-1"), "--every must be a positive number of seconds"),
        (("--on-change", "2"), "--on-change must be a fraction of the picture from 0 to 1"),
        (("--max-events", "0"), "--max-events must be 1 or more"),
        (("--until", "soon"), "--until soon is not a time"),
        (("--open-timeout", "0"), "--open-timeout must be a positive number of seconds"),
    ],
)
def test_a_bad_setting_is_one_line_before_any_source_or_model_opens(tmp_path, options, words):
    # the model and the source do not exist: the setting is refused before either is looked at
    one_line_error(cli("watch", "http://127.0.0.1:9/x", "What?", "-m", str(tmp_path / "none.gguf"), *options), words)


@pytest.mark.parametrize(
    "number, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_stops_the_watch_between_whole_lines(tiny_pair, camera, tmp_path, number, code, word):
    cam = camera(fps=20)
    stderr = tmp_path / "stderr"
    child = start_watch(tiny_pair, cam.url, stderr_path=stderr)
    try:
        first = child.stdout.readline()  # the model answers about each newest frame, continuously
        assert json.loads(first)["source"] == cam.url
        child.send_signal(number)
        rest, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == code, stderr.read_text()
    json_lines(first + rest)  # every line whole: each parses
    assert (first + rest).endswith("\n")
    assert stderr.read_text().strip().splitlines()[-1] == word


# --- the parts, as units ------------------------------------------------------------------------


def frame(index: int, seconds: float) -> Frame:
    return Frame(seconds, frame_pixels(index, 64, 48))


def test_the_schedule_every_and_on_change():
    every = Schedule(every=1.0)
    assert every.due(frame(0, 0.0))
    every.asked(frame(0, 0.0))
    assert not every.due(frame(1, 0.5)) and every.due(frame(2, 1.0))

    still = np.zeros((48, 64, 3), np.uint8)
    lit = still.copy()
    lit[:, :16] = 255  # a quarter of the picture changed
    on_change = Schedule(on_change=0.2)
    assert on_change.due(Frame(0.0, still))
    on_change.asked(Frame(0.0, still))
    assert not on_change.due(Frame(0.1, still + 3))  # noise
    assert on_change.due(Frame(0.2, lit))
    assert changed_fraction(thumbnail(still), thumbnail(lit)) == pytest.approx(0.25)

    both = Schedule(every=1.0, on_change=0.2)
    both.asked(Frame(0.0, still))
    assert not both.due(Frame(0.5, lit)) and not both.due(Frame(1.5, still)) and both.due(Frame(1.5, lit))

    for bad in ({"every": 0}, {"on_change": 1.5}):
        with pytest.raises(BadInput):
            Schedule(**bad)


def test_until_reads_durations_times_of_day_and_dates():
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)
    assert until_deadline("90s", now) == now + dt.timedelta(seconds=90)
    assert until_deadline("2h", now) == now + dt.timedelta(hours=2)
    assert until_deadline("18:30", now) == now.replace(hour=18, minute=30)
    assert until_deadline("11:00", now) == now.replace(hour=11) + dt.timedelta(days=1)  # passed today: tomorrow
    assert until_deadline("2026-12-24T18:00+00:00", now) == dt.datetime(2026, 12, 24, 18, tzinfo=dt.timezone.utc)
    with pytest.raises(BadInput, match="not a time"):
        until_deadline("soon", now)


def test_the_mailbox_keeps_the_newest_frame_and_counts_the_rest():
    stop = threading.Event()
    lossy = Mailbox(lossless=False)
    for index in range(5):
        lossy.put(frame(index, index / 10), stop)
    assert lossy.take(0).time_s == 0.4 and lossy.take_skipped() == 4 and lossy.take(0) is None
    lossy.finish(BadInput("gone"))
    with pytest.raises(BadInput):
        lossy.take(0)

    lossless = Mailbox(lossless=True)
    putter = threading.Thread(target=lambda: [lossless.put(frame(i, float(i)), stop) for i in range(3)])
    putter.start()
    taken = [lossless.take(5).time_s for _ in range(3)]
    putter.join(5)
    assert taken == [0.0, 1.0, 2.0] and lossless.take_skipped() == 0
