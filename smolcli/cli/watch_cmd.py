"""`smolcli watch SOURCE PROMPT`: a question asked about a camera, stream, video file or folder, one JSON line
per answer on stdout; stream state on stderr."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Optional

import typer

import smolcli
from smolcli.api.options import GenerationSettings, LoadOptions
from smolcli.api.watch import check_watch, open_feed, watch
from smolcli.cli import run_options as opt
from smolcli.cli.output import progress
from smolcli.cli.streaming import write_answer


@opt.with_shared_options
def watch_source(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="/dev/video0 (a webcam), an rtsp://, http(s):// (MJPEG) or udp:// stream, a video file, or a folder.",
        ),
    ],
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="The question asked about each frame.")],
    model: opt.Model,
    every: Annotated[
        Optional[float], typer.Option("--every", metavar="SECONDS", help="Ask about one frame per SECONDS.")
    ] = None,
    on_change: Annotated[
        Optional[float],
        typer.Option(
            "--on-change",
            metavar="FRACTION",
            help="Ask only when the frame differs from the last one asked about by more than FRACTION of the picture (0.1: a tenth changed).",
        ),
    ] = None,
    max_events: Annotated[
        Optional[int], typer.Option("--max-events", metavar="N", help="Stop after N answers.")
    ] = None,
    until: Annotated[
        Optional[str],
        typer.Option(
            "--until", metavar="TIME", help="Stop then: 18:30, 2026-12-24T18:00, or a duration (90s, 10m, 2h)."
        ),
    ] = None,
    realtime: Annotated[
        bool,
        typer.Option(
            "--realtime/--no-realtime",
            help="Play a video file at its own pace (default), or read it as fast as answers come, every frame considered.",
        ),
    ] = True,
    open_timeout: Annotated[
        float,
        typer.Option(
            "--open-timeout",
            metavar="SECONDS",
            help="Give up when a camera or stream gives no frame for this long at the start (later drops are retried).",
        ),
    ] = 10.0,
    system: opt.System = None,
    settings: LoadOptions = None,
    generation: GenerationSettings = None,
) -> None:
    """Ask about a camera, a stream, a video file or a folder as it goes: one JSON line per answer.

    Each line: time (ISO 8601), source, frame_time_s, text, json (with --json-schema), file (a folder's image)
    and skipped (frames that came while the model was busy). Stream state goes to stderr. A dropped stream is
    reopened; Ctrl-C or SIGTERM stops between lines.

    Examples:

      smolcli watch /dev/video0 "Is anyone in the room?" -m smolvlm-256m --every 5

      smolcli watch rtsp://192.168.1.20:554/stream1 "Describe the scene." -m smolvlm-256m --on-change 0.2

      smolcli watch ./inbox "What is on this receipt?" -m smolvlm-500m

      smolcli watch clip.mp4 "What happens?" -m smolvlm2-256m --every 2 --no-realtime
    """
    # the settings, then the source: a mistake in either fails in one line before a model is pulled or loaded
    _, deadline = check_watch(prompt, every, on_change, max_events, until)  # --until 10m counts from now
    feed = open_feed(source, realtime, open_timeout, report=progress)
    with feed:
        # every frame is new: storing its embeddings would only fill the cache
        options = dataclasses.replace(settings, embedding_cache=False)
        load_args = {field.name: getattr(options, field.name) for field in dataclasses.fields(options)}
        with smolcli.load(model, **load_args, report=progress) as loaded:
            events = watch(
                loaded,
                prompt,
                feed,
                every=every,
                on_change=on_change,
                max_events=max_events,
                until=deadline,
                system=system,
                report=progress,
                **dataclasses.asdict(generation),
            )
            for event in events:
                # one write per line: a line is printed whole or, when a signal stops the run first, not at all
                write_answer(json.dumps(event.as_dict(), ensure_ascii=False) + "\n")
