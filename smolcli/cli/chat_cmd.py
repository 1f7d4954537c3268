"""`smolcli chat`: a conversation about images, one message per line, answers streamed to stdout."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from smolcli.api.chat import Chat
from smolcli.api.model import Model
from smolcli.api.options import GenerationSettings, LoadOptions
from smolcli.cli import run_options as opt
from smolcli.cli.output import cli_spelling, progress
from smolcli.cli.streaming import write_answer
from smolcli.cli.transcript_file import save_transcript
from smolcli.errors import SmolcliError
from smolcli.runtime.llama.engine import Counters
from smolcli.runtime.vision.images import STDIN, load_image

HELP = """Type a message and press Enter. Commands:
  /image PATH   attach an image to your next message (<image> in the message places it)
  /video PATH   attach a clip (MP4, WebM, MOV, MKV, GIF, WebP) to your next message; it stays in the conversation
  /clear        start a new conversation
  /save FILE    write the conversation as JSON
  /help         this list
  /exit         leave (Ctrl-D too)"""


@opt.with_shared_options
def chat(
    model: opt.Model,
    image: opt.Images = None,
    system: opt.System = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="At exit, print the engine's counters as JSON on stderr.")
    ] = False,
    fps: opt.Fps = None,
    max_frames: opt.MaxFrames = None,
    settings: LoadOptions = None,
    generation: GenerationSettings = None,
) -> None:
    """Talk about images and clips, turn by turn; earlier turns stay in the cache and are never evaluated again.

    Reads one message per line from the terminal or from a pipe. Answers go to stdout,
    prompts and notes to stderr. Images given with -i go with the first message. The image size
    (--image-size, or --max-tiles for the -i images) holds for the whole conversation.

    Examples:

      smolcli chat -m models/ -i photo.jpg

      printf 'Describe the image.\\nWhat colour is it?\\n' | smolcli chat -m models/ -i photo.jpg

      printf '/video clip.mp4\\nWhat happens?\\nAnd at the end?\\n' | smolcli chat -m smolvlm2-256m
    """
    sources = image or []
    if STDIN in sources:
        raise SmolcliError("chat reads its messages from stdin: give images as files (-i PATH or /image PATH)")
    images = opt.load_images(sources)
    if settings.max_tiles is not None and not images:
        raise SmolcliError(
            "chat chooses the size for --max-tiles from the images given with -i; give them, or use --image-size PX"
        )

    with Model.open(model, settings, report=progress) as loaded:
        # with --max-memory the plan is made here, before the weights load
        conversation = loaded.chat(system, images, **dataclasses.asdict(generation))
        try:
            failures = _converse(conversation, interactive=sys.stdin.isatty(), clips=Clips(fps, max_frames))
        finally:
            if stats:
                progress(json.dumps(_stats(conversation)))
    if failures:
        raise typer.Exit(1)  # each failure already had its own line on stderr


@dataclass
class Clips:
    """The clip /video attached for the next message, and how its frames are sampled."""

    fps: float | None = None
    max_frames: int | None = None
    pending: str | None = None

    def take(self) -> dict:
        """Chat.send's video arguments for the next message (none without a clip), the clip then taken."""
        if self.pending is None:
            return {}
        video, self.pending = self.pending, None
        return {"video": video, "fps": self.fps, "max_frames": self.max_frames, "report": progress}


def _converse(session: Chat, interactive: bool, clips: Clips) -> int:
    """The read-answer loop; a bad message or command is reported and the conversation goes on."""
    failures = 0
    if hasattr(sys.stdin, "reconfigure"):
        # a line with a byte that is not UTF-8 reads as a lone surrogate, which the library refuses for that
        # line alone; strict decoding would raise out of readline() and end the whole chat
        sys.stdin.reconfigure(errors="surrogateescape")
    if interactive:
        progress(HELP)
    while True:
        if interactive:
            sys.stderr.write("> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            if interactive:
                progress("")  # Ctrl-D: end the prompt line
            break
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not _command(session, line, clips):
                    break
            else:
                _answer(session, line, interactive, clips.take())
        except SmolcliError as error:
            progress(f"error: {error.text(cli_spelling)}")
            failures += 1
    return failures


def _answer(session: Chat, text: str, interactive: bool, video: dict) -> None:
    try:
        if session.settings.json_schema is not None:
            answer = session.send(text, **video)  # printed once it parsed and validated: never half a JSON value
            write_answer(answer.text)
        else:
            stream = session.send(text, stream=True, **video)
            for piece in stream:
                write_answer(piece)
            answer = stream.answer
    except KeyboardInterrupt:
        if not interactive:
            raise
        write_answer("\n")
        progress("(interrupted: this message and its answer were dropped)")
        return
    write_answer("\n")
    if answer.context_full:
        progress("(the context is full, so the answer was cut off: /clear to start over)")


def _command(session: Chat, line: str, clips: Clips) -> bool:
    """Run one /command; False means leave."""
    name, _, argument = line.partition(" ")
    argument = argument.strip().strip("'\"")
    if "\0" in argument:
        raise SmolcliError(f"{name}: {argument!r} holds a NUL character, which no path can; check it")
    if name in ("/exit", "/quit"):
        return False
    if name == "/help":
        progress(HELP)
    elif name == "/clear":
        session.clear()
        clips.pending = None
        progress("(cleared: a new conversation)")
    elif name == "/image":
        _attach(session, argument)
    elif name == "/video":
        _attach_video(session, argument, clips)
    elif name == "/save":
        if not argument:
            raise SmolcliError("/save needs a file name: /save chat.json")
        save_transcript(session.transcript(), Path(argument))
        progress(f"(saved {argument})")
    else:
        raise SmolcliError(f"unknown command {name}; /help lists the commands")
    return True


def _attach(session: Chat, source: str) -> None:
    if not source:
        raise SmolcliError("/image needs a path: /image photo.jpg")
    if source == STDIN:
        raise SmolcliError("stdin carries the messages: give the image as a file")
    if session.model.files.mmproj is None:
        raise SmolcliError("this model has no vision encoder beside it: restart chat with --mmproj PATH")
    session.attach(load_image(source))
    progress(f"(image attached to your next message: {source})")


def _attach_video(session: Chat, source: str, clips: Clips) -> None:
    if not source:
        raise SmolcliError("/video needs a path: /video clip.mp4")
    if source == STDIN:
        raise SmolcliError("stdin carries the messages: give the clip as a file")
    path = Path(source).expanduser()
    if not path.is_file():
        raise SmolcliError(f"{source}: {'is a folder, not a video file' if path.is_dir() else 'no such video file'}")
    if session.model.files.mmproj is None:
        raise SmolcliError("this model has no vision encoder beside it: restart chat with --mmproj PATH")
    clips.pending = str(path)
    progress(f"(video attached to your next message: {source})")


def _stats(session: Chat) -> dict:
    counters = session.model.engine.counters if session.model.loaded else Counters()
    report = {
        **dataclasses.asdict(counters),
        "n_past": session.n_past,
        "n_ctx": session.n_ctx,
        "turns": [dataclasses.asdict(turn) for turn in session.turns],
    }
    if session.memory_plan:
        report["memory_plan"] = session.memory_plan
    return report
