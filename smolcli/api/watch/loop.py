"""The watch loop: take the newest frame, ask when the schedule says so, yield one event per answer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Iterator

from PIL import Image

from smolcli.api.answer import Answer
from smolcli.api.watch.feed import FrameFeed
from smolcli.api.watch.mailbox import WAKE_S
from smolcli.api.watch.schedule import Schedule, until_deadline
from smolcli.api.watch.sources import resolve_source
from smolcli.errors import AnswerTruncated, BadInput


@dataclass(frozen=True)
class WatchEvent:
    """One answer about one frame. `as_dict()` is the JSON line `smolcli watch` prints."""

    time: dt.datetime  # when the answer was ready, local time with its offset
    source: str
    frame_time_s: float  # a file's: the frame's own timestamp; live and folder: seconds since the watch started
    answer: Answer
    skipped: int  # frames replaced, unasked, since the previous event (the model was busy)
    file: str | None = None  # a folder's: the image file

    def as_dict(self) -> dict:
        line = {
            "time": self.time.isoformat(timespec="milliseconds"),
            "source": self.source,
            "frame_time_s": self.frame_time_s,
            "text": self.answer.text,
        }
        if self.answer.json is not None:
            line["json"] = self.answer.json
        if self.file is not None:
            line["file"] = self.file
        line["skipped"] = self.skipped
        return line


def check_watch(
    prompt: str,
    every: float | None = None,
    on_change: float | None = None,
    max_events: int | None = None,
    until: str | dt.datetime | None = None,
) -> tuple[Schedule, dt.datetime | None]:
    """The schedule and the deadline, or a BadInput naming the bad setting: a front end calls this before
    opening a source or loading a model."""
    if not prompt.strip():
        raise BadInput("the prompt is empty: give a question")
    if max_events is not None and max_events < 1:
        raise BadInput(f"{{max_events}} must be 1 or more, not {max_events}")
    return Schedule(every, on_change), until_deadline(until)


def _quiet(_message: str) -> None:
    pass


def open_feed(
    source: str, realtime: bool = True, open_timeout: float = 10.0, report: Callable[[str], None] = _quiet
) -> FrameFeed:
    """A source opened and giving frames (a folder: watched for new images), or a one-line BadInput.

    SOURCE: /dev/videoN, an rtsp://, http(s)://, udp://, rtp://, srt://, tcp:// or rtmp:// stream, a video file,
    or a folder. Close it (or use it in a with block) when done.
    """
    feed = FrameFeed(resolve_source(source), realtime, open_timeout, report)
    try:
        feed.wait_open()
    except BaseException:
        feed.close()
        raise
    return feed


def watch(
    model,
    prompt: str,
    source: str | FrameFeed,
    *,
    every: float | None = None,
    on_change: float | None = None,
    max_events: int | None = None,
    until: str | dt.datetime | None = None,
    realtime: bool = True,
    open_timeout: float = 10.0,
    system: str | None = None,
    report: Callable[[str], None] = _quiet,
    **generation,
) -> Iterator[WatchEvent]:
    """Ask `model` about a camera, stream, video file or folder as it goes; one WatchEvent per answer.

    `every` asks about one frame per that many seconds, `on_change` only about a frame that differs from the
    last one asked about by more than that fraction of the picture (both: each period, if changed; neither:
    each newest frame as soon as the model is free). Frames that arrive while the model answers replace each
    other (the event's `skipped` counts them). Ends after `max_events`, at `until`, or at a file's end; a live
    source that drops is reopened (said to `report`). `generation`: Model.ask's settings (max_tokens,
    temperature, json_schema, ...).

    >>> with smolcli.load("smolvlm-256m") as model:                                   # doctest: +SKIP
    ...     for event in watch(model, "Is anyone at the door?", "rtsp://cam/stream", every=5):
    ...         print(event.frame_time_s, event.answer.text)
    """
    schedule, deadline = check_watch(prompt, every, on_change, max_events, until)
    feed = source if isinstance(source, FrameFeed) else open_feed(source, realtime, open_timeout, report)
    with feed:
        events = 0
        while max_events is None or events < max_events:
            if deadline is not None and dt.datetime.now().astimezone() >= deadline:
                report(f"{feed.source.label}: stopped at {deadline.isoformat(timespec='seconds')}, as asked")
                return
            frame = feed.next_frame(WAKE_S)
            if frame is None:
                if feed.ended:
                    report(f"{feed.source.label}: the video ended")
                    return
                continue
            if not schedule.due(frame):
                continue
            schedule.asked(frame)
            try:
                answer = model.ask(prompt, [Image.fromarray(frame.pixels)], system=system, **generation)
            except AnswerTruncated as error:
                # one answer cut short is not a reason to stop watching a camera
                report(f"{feed.source.label}: no answer for the frame at {frame.time_s:g} s ({error})")
                continue
            events += 1
            now = dt.datetime.now().astimezone()
            yield WatchEvent(now, feed.source.label, frame.time_s, answer, feed.take_skipped(), frame.file)
