"""`smolcli ask`: one question, with images, answered on stdout as it is generated."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Annotated, Optional

import typer

from smolcli.api.model import Model
from smolcli.api.options import GenerationSettings, LoadOptions
from smolcli.cli import run_options as opt
from smolcli.cli.output import progress
from smolcli.cli.streaming import write_answer
from smolcli.errors import SmolcliError
from smolcli.runtime.vision.images import STDIN


@opt.with_shared_options
def ask(
    model: opt.Model,
    prompt: Annotated[
        Optional[str],
        typer.Argument(help="The question; read from stdin when left out. <image> marks where each image goes."),
    ] = None,
    image: opt.Images = None,
    system: opt.System = None,
    ignore_eos: Annotated[
        bool, typer.Option("--ignore-eos", help="Generate exactly --max-tokens tokens (benchmarks).")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (answer, usage, timings) instead of streaming.")
    ] = False,
    logprobs: opt.Logprobs = None,
    videos: Annotated[
        Optional[list[str]],
        typer.Option(
            "--video", help="A clip (MP4, WebM, MOV, MKV, animated GIF/WebP) to ask about (one); - reads stdin."
        ),
    ] = None,
    fps: opt.Fps = None,
    max_frames: opt.MaxFrames = None,
    settings: LoadOptions = None,
    generation: GenerationSettings = None,
) -> None:
    """Answer one question about zero or more images.

    Images go before the text unless <image> markers in the prompt place them.
    Greedy decoding by default: the same input gives the same answer.

    Examples:

      smolcli ask -m SmolVLM-256M-Instruct-Q4_K_M.gguf -i photo.jpg "What is in this image?"

      cat scan.png | smolcli ask -m models/ -i - "Transcribe the text."

      smolcli ask -m models/ -i a.jpg -i b.jpg "Compare <image> with <image>."

      echo "Describe it in one word." | smolcli ask -m models/ -i cat.webp --json

      smolcli ask -m SmolVLM-256M-Instruct -i scan.png --max-tiles 4 "Summarize."

      smolcli ask -m smolvlm-2.2b -i photo.jpg --max-memory 3G "Describe it."

      smolcli ask -m smolvlm2-256m --video clip.mp4 --max-frames 16 "What happens?"
    """
    if logprobs is not None and not as_json:
        raise SmolcliError("--logprobs goes with --json: the log-probabilities come in the JSON object")
    if videos and len(videos) > 1:
        # the option used to keep the last clip given and drop the others without a word
        raise SmolcliError(f"--video was given {len(videos)} times; a question takes one clip (ask once per clip)")
    video = videos[0] if videos else None
    sources = image or []
    question = prompt if prompt is not None else _prompt_from_stdin(sources + ([video] if video else []))
    images = opt.load_images(sources)
    if video == STDIN and STDIN in sources:
        raise SmolcliError("stdin can carry the video or an image, not both")
    if not question.strip() and not images and video is None:
        raise SmolcliError("the prompt is empty: give a question as an argument or on stdin")

    # a structured answer is printed only once it parsed and validated: never half a JSON value
    streaming = not as_json and generation.json_schema is None
    with Model.open(model, settings, report=progress) as loaded:
        answer = loaded.ask(
            question,
            images,
            system=system,
            logprobs=logprobs,
            stream=streaming,
            **({"video": video, "fps": fps, "max_frames": max_frames, "report": progress} if video else {}),
            **dataclasses.asdict(dataclasses.replace(generation, ignore_eos=ignore_eos)),
        )
        if streaming:
            for piece in answer:
                write_answer(piece)
            answer = answer.answer
        elif not as_json:
            write_answer(answer.text)
        if answer.context_full:
            progress(
                f"note: the {answer.n_ctx}-token context filled up after {len(answer.tokens)} tokens; raise --ctx for longer answers"
            )
        write_answer(json.dumps(answer.as_dict(), indent=2) + "\n" if as_json else "\n")


def _prompt_from_stdin(image_sources: list[str]) -> str:
    if STDIN in image_sources:
        raise SmolcliError("stdin carries the image (-i -) or video (--video -), so give the prompt as an argument")
    if sys.stdin is None or sys.stdin.isatty():
        raise SmolcliError('no prompt: give it as an argument (smolcli ask -m MODEL "question") or pipe it on stdin')
    return sys.stdin.read().strip()
