"""`smolcli batch`: many questions about many images, one model load, one JSONL line per item."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from smolcli.api.batch import (
    BatchItem,
    ResultFile,
    check_unique_ids,
    items_from_jsonl,
    items_from_paths,
    parse_shard,
    run_batch,
)
from smolcli.api.model import Model
from smolcli.api.options import GenerationSettings, LoadOptions
from smolcli.cli import run_options as opt
from smolcli.cli.output import progress
from smolcli.errors import BadInput

SOME_FAILED = 3  # exit code: the batch ran, and some items have error lines


@opt.with_shared_options
def batch(
    model: opt.Model,
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files or folders (with --prompt), or a requests .jsonl file, or - for JSONL on stdin."
        ),
    ],
    prompt: Annotated[
        Optional[str], typer.Option("--prompt", "-p", help="The question asked of every image given as a path.")
    ] = None,
    system: opt.System = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output", "-o", help="Append the JSONL here instead of stdout; ids already answered there are skipped."
        ),
    ] = None,
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors", help="With -o: ask again the items whose lines are errors.")
    ] = False,
    sidecar: Annotated[
        bool, typer.Option("--sidecar", help="Also write NAME.txt (NAME.json with a schema) beside each image.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="With --sidecar: redo images that have one.")] = False,
    shard: Annotated[
        Optional[str],
        typer.Option("--shard", metavar="I/N", help="Answer only shard I of N (a stable split by id), 0-based."),
    ] = None,
    show_progress: Annotated[
        Optional[bool],
        typer.Option("--progress/--no-progress", help="Progress bar on stderr (default: when stderr is a terminal)."),
    ] = None,
    ray: Annotated[
        Optional[str],
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Answer on a running Ray cluster (ray://HOST:10001, HOST:6379 or auto), or 'local' for a Ray started here; needs smolcli[ray].",
        ),
    ] = None,
    ray_actors: Annotated[
        int, typer.Option("--ray-actors", min=1, help="With --ray: actors, each loading the model once.")
    ] = 1,
    settings: LoadOptions = None,
    generation: GenerationSettings = None,
) -> None:
    """Answer a whole batch with one model load: JSONL out, one line per item in input order.

    A line is {"id", "text" (or "json" with a schema), "finish_reason", "usage", "timings"},
    or {"id", "error"} for an item that failed: a bad item never stops the batch. A request line
    is {"id", "prompt", "images": [...], "system", "max_tokens", "temperature", "json_schema"}
    (paths relative to the .jsonl file). Exit codes: 0 every item answered, 3 some failed, 1 the
    batch could not run.

    Examples:

      smolcli batch -m smolvlm-256m --prompt "Describe it." photos/ more/*.jpg -o captions.jsonl

      smolcli batch -m smolvlm-256m requests.jsonl --json-schema receipt.json > fields.jsonl

      smolcli batch -m smolvlm-256m --prompt "Caption it." photos/ --sidecar

      smolcli batch -m smolvlm-256m --prompt "Tag it." photos/ --shard 1/4 -o part1.jsonl
    """
    parts = parse_shard(shard) if shard is not None else None
    if retry_errors and output is None:
        raise BadInput("--retry-errors needs -o FILE: the errors to retry are read from it")
    items = _items(inputs, prompt)
    defaults = {"system": system, **dataclasses.asdict(generation)}
    results = ResultFile(output, retry_errors) if output is not None else None
    write = results.write if results else _write_stdout
    bar = _Bar(len(items), show_progress if show_progress is not None else sys.stderr.isatty())
    if ray is not None:
        summary = _on_ray(ray, ray_actors, model, settings, items, defaults, write, results, parts, sidecar)
    else:
        summary = _here(model, settings, items, defaults, write, results, parts, sidecar, overwrite, bar)
    progress(f"{summary.answered} answered, {summary.failed} failed, {summary.skipped} skipped")
    if summary.failed:
        raise typer.Exit(SOME_FAILED)


def _here(model, settings, items, defaults, write, results, parts, sidecar, overwrite, bar):
    try:
        with Model.open(model, settings, report=progress) as loaded:
            summary = run_batch(
                loaded, items, defaults, write, results.done if results else set(), parts, sidecar, overwrite, bar.step
            )
    finally:
        bar.close()
        if results:
            results.close()
    return summary


def _on_ray(address, actors, model, settings, items, defaults, write, results, parts, sidecar):
    if sidecar:
        raise BadInput("--sidecar writes beside the images on this machine: run it without --ray")
    try:
        from smolcli.plugins.ray_batch import run_batch_on_ray
    except ImportError:
        raise BadInput("--ray needs Ray: pip install 'smolcli[ray]'") from None
    done = results.done if results else set()
    try:
        summary = run_batch_on_ray(address, model, settings, items, defaults, write, done, parts, actors)
    finally:
        if results:
            results.close()
    summary.skipped = len(items) - summary.answered - summary.failed
    return summary


def _items(inputs: list[str], prompt: Optional[str]) -> list[BatchItem]:
    requests = [i for i in inputs if i == "-" or i.endswith(".jsonl")]
    if requests:
        if len(inputs) > 1:
            raise BadInput("give one requests file (.jsonl or - for stdin), or image paths, not both")
        if prompt is not None:
            raise BadInput("--prompt is for image paths; in a .jsonl file each request has its own prompt")
        if requests[0] == "-":
            items = list(items_from_jsonl(sys.stdin.buffer))
        else:
            path = Path(requests[0]).expanduser()
            if not path.is_file():
                raise BadInput(f"{path}: no such requests file")
            with open(path, "rb") as lines:  # as bytes: a line that is not UTF-8 is that item's error
                items = list(items_from_jsonl(lines, base=path.parent))
    elif prompt is None:
        raise BadInput('image paths need the question: give it with --prompt "..."')
    else:
        items = items_from_paths(inputs, prompt)
    check_unique_ids(items)  # before any work: a second answer under one id would be lost on resume
    return items


def _write_stdout(line: dict) -> None:
    sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class _Bar:
    """A one-line progress bar on stderr: done/total, items per second, time left."""

    def __init__(self, total: int, shown: bool):
        self.total, self.shown, self.count, self.failed = total, shown, 0, 0
        self.started = time.monotonic()

    def step(self, _item: BatchItem, line: dict | None) -> None:
        self.count += 1
        self.failed += bool(line and "error" in line)
        if not self.shown:
            return
        elapsed = time.monotonic() - self.started
        rate = self.count / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.count) / rate if rate > 0 else 0.0
        filled = int(30 * self.count / max(1, self.total))
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.count}/{self.total} "
            f"{rate:.2f} items/s, {left:.0f} s left, {self.failed} failed "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown and self.count:
            sys.stderr.write("\n")
