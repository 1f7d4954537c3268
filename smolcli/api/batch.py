"""Many questions, one model load: the items of a batch, their answers as JSONL lines, resuming and sharding.

A batch is a list of items (from image paths and one prompt, or from JSONL requests); each is
asked of one loaded Model and becomes one result line. A bad item becomes an `error` line and
never stops the batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from smolcli.api.model import Model
from smolcli.errors import BadInput, SmolcliError
from smolcli.util.json_limits import loads
from smolcli.util.staging import check_replaceable

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
SURROGATES = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, as surrogateescape reads them
REQUEST_FIELDS = ("id", "prompt", "images", "video", "system", "max_tokens", "temperature", "json_schema")


@dataclass(frozen=True)
class BatchItem:
    id: str
    prompt: str = ""
    images: tuple[str, ...] = ()
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    json_schema: dict | None = None
    problem: str | None = None  # set for an input line that could not be read: it becomes an error line
    base: Path = field(default=Path("."), compare=False)  # what relative image paths are relative to
    line: int | None = field(default=None, compare=False)  # its line in a requests file


def items_from_paths(paths: Iterable[str | Path], prompt: str) -> list[BatchItem]:
    """Image files, and the images inside folders (recursively, sorted): one item each, its path as its id."""
    items: list[BatchItem] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise BadInput(f"{path}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
            items += [BatchItem(str(p), prompt, (str(p),)) for p in found]
        elif path.is_file():
            items.append(BatchItem(str(path), prompt, (str(path),)))
        else:
            raise BadInput(f"{path}: no such image file or folder")
    return items


def items_from_jsonl(lines: Iterable[str | bytes], base: Path = Path(".")) -> Iterator[BatchItem]:
    """One request per line; a line that cannot be used still yields an item, carrying its problem.

    Lines may be bytes (a file read as it is): one that is not UTF-8 is that item's error, never read with
    U+FFFD put in place of its bad bytes (ask and chat refuse such a prompt too)."""
    for number, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            line = line.decode("utf-8", "surrogateescape")
        if not line.strip():
            continue
        fallback_id = f"line-{number}"
        if SURROGATES.search(line):
            yield BatchItem(
                fallback_id, problem=f"line {number} is not valid UTF-8 text; save the file as UTF-8", line=number
            )
            continue
        try:
            request = loads(line, f"line {number}")
        except BadInput as error:
            yield BatchItem(fallback_id, problem=str(error), line=number)
            continue
        if not isinstance(request, dict):
            yield BatchItem(fallback_id, problem=f"line {number} is not a JSON object", line=number)
            continue
        item_id = request.get("id", fallback_id)
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
            shown = json.dumps(item_id)[:40]
            yield BatchItem(
                fallback_id, problem=f"line {number}: id {shown} must be a string or an integer", line=number
            )
            continue
        yield dataclasses.replace(_request_item(str(item_id), request, base), line=number)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _request_item(item_id: str, request: dict, base: Path) -> BatchItem:
    unknown = sorted(set(request) - set(REQUEST_FIELDS))
    if unknown:
        return BatchItem(item_id, problem=f"unknown field {unknown[0]!r} (a request has {', '.join(REQUEST_FIELDS)})")
    if request.get("video") is not None:
        return BatchItem(item_id, problem="video questions are not supported by this smolcli yet")
    images = request.get("images", [])
    if isinstance(images, str):
        images = [images]
    max_tokens, temperature = request.get("max_tokens"), request.get("temperature")
    # every field, so that a wrong type is this item's error line, never an exception that stops the batch
    checks = (
        (isinstance(request.get("prompt", ""), str), "prompt must be a string"),
        (isinstance(images, list) and all(isinstance(i, str) for i in images), "images must be a list of paths"),
        (request.get("system") is None or isinstance(request["system"], str), "system must be a string"),
        (
            max_tokens is None or (isinstance(max_tokens, int) and not isinstance(max_tokens, bool)),
            "max_tokens must be a whole number",
        ),
        (temperature is None or _is_number(temperature), "temperature must be a number"),
        (
            request.get("json_schema") is None or isinstance(request["json_schema"], dict),
            "json_schema must be an object",
        ),
    )
    for ok, problem in checks:
        if not ok:
            return BatchItem(item_id, problem=problem)
    return BatchItem(
        item_id,
        request.get("prompt", ""),
        tuple(images),
        request.get("system"),
        max_tokens,
        temperature,
        request.get("json_schema"),
        base=base,
    )


def check_unique_ids(items: list[BatchItem]) -> None:
    """BadInput naming the first id given twice, and where: answering both (and resuming by id) would lose one."""
    seen: dict[str, list[BatchItem]] = {}
    for item in items:
        seen.setdefault(item.id, []).append(item)
    for item_id, same in seen.items():
        if len(same) > 1:
            where = (
                f"lines {', '.join(str(i.line) for i in same)}" if all(i.line for i in same) else f"{len(same)} times"
            )
            raise BadInput(f"id {item_id!r} is given more than once ({where}); every item needs its own id")


def in_shard(item_id: str, shard: tuple[int, int] | None) -> bool:
    """A stable partition by id: the same id lands in the same shard on every machine and every run."""
    if shard is None:
        return True
    index, count = shard
    return int.from_bytes(hashlib.sha256(item_id.encode("utf-8")).digest()[:8], "big") % count == index


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise BadInput(f"shard {text!r} is not I/N (for example 0/4)") from None
    if count < 1 or not 0 <= index < count:
        raise BadInput(f"shard {text!r}: I must be from 0 to N-1, and N at least 1")
    return index, count


def item_images(item: BatchItem) -> list[str]:
    """Its image paths, relative ones taken from its base."""
    return [str((item.base / image) if not Path(image).is_absolute() else image) for image in item.images]


def answer_item(model: Model, item: BatchItem, defaults: dict, store_prefix: bool = True) -> dict:
    """One item's result line: its answer, or its one-line error. store_prefix: see Model.ask."""
    if item.problem is not None:
        return {"id": item.id, "error": item.problem}
    settings = dict(defaults)
    for name in ("system", "max_tokens", "temperature", "json_schema"):
        if getattr(item, name) is not None:
            settings[name] = getattr(item, name)
    try:
        answer = model.ask(item.prompt, item_images(item), store_prefix=store_prefix, **settings)
    except SmolcliError as error:
        return {"id": item.id, "error": error.text(_item_spelling)}
    line = {"id": item.id}
    line.update({"json": answer.json} if settings.get("json_schema") is not None else {"text": answer.text})
    line.update(
        finish_reason=answer.finish_reason,
        usage=dataclasses.asdict(answer.usage),
        timings=dataclasses.asdict(answer.timings),
    )
    return line


def _item_spelling(setting: str, value: str | None) -> str:
    # an item's errors name its request fields where there is one, the setting otherwise
    return setting if value is None else f"{setting} {value}"


class ResultFile:
    """The output JSONL: ids answered there are skipped, each new line is appended whole.

    A line goes out in one write to a file opened for appending, so an interrupted batch, even
    one killed with SIGKILL, leaves whole lines; a torn last line (a crash of the machine) is cut
    off when the batch resumes.
    """

    def __init__(self, path: Path, retry_errors: bool):
        self.path = path
        self.done: set[str] = set()
        self._resume(retry_errors)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _resume(self, retry_errors: bool) -> None:
        """The ids already answered; the file rewritten without a torn last line or the lines to retry.

        Only a regular file is read (a device such as /dev/zero never ends, a pipe may never start), line by
        line, and not past the size it had when opened."""
        check_replaceable(self.path)
        if not self.path.exists():
            return
        kept, torn, count = [], False, 0
        with open(self.path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            while handle.tell() < size:
                raw = handle.readline(size - handle.tell())
                if not raw.endswith(b"\n"):
                    torn = True  # a last line cut short by a crash
                    break
                count += 1
                text = raw.decode("utf-8", "replace").rstrip("\n")
                try:
                    line = json.loads(text)
                except ValueError:
                    continue
                if not isinstance(line, dict) or (retry_errors and "error" in line):
                    continue
                kept.append(text)
                self.done.add(str(line.get("id")))
        if torn or len(kept) != count:
            # rewrite without the torn or retried lines, atomically, before anything is appended
            from smolcli.util.atomic_file import write_atomically

            write_atomically(self.path, "".join(f"{text}\n" for text in kept).encode("utf-8"))

    def write(self, line: dict) -> None:
        os.write(self._fd, (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))

    def close(self) -> None:
        os.close(self._fd)


def sidecar_path(item: BatchItem, structured: bool) -> Path | None:
    """NAME.txt (or NAME.json) beside an item's first image."""
    if not item.images:
        return None
    image = Path(item.images[0])
    return (item.base / image if not image.is_absolute() else image).with_suffix(".json" if structured else ".txt")


def write_sidecar(path: Path, line: dict) -> None:
    from smolcli.util.atomic_file import write_atomically

    body = json.dumps(line["json"], ensure_ascii=False, indent=2) if "json" in line else line["text"]
    write_atomically(path, (body + "\n").encode("utf-8"))


def reused_images(items: list[BatchItem]) -> list[bool]:
    """For each item, whether a later one asks about the same images (the same files, in order)."""
    keys = [_images_key(item) for item in items]
    remaining = Counter(keys)
    shown = []
    for key in keys:
        remaining[key] -= 1
        shown.append(bool(key) and remaining[key] > 0)
    return shown


def _images_key(item: BatchItem) -> tuple[str, ...]:
    return tuple(os.path.realpath(image) for image in item_images(item)) if item.problem is None else ()


@dataclass
class BatchSummary:
    answered: int = 0
    failed: int = 0
    skipped: int = 0  # already answered in the output file, sidecar already there, or another shard's


def run_batch(
    model: Model,
    items: Iterable[BatchItem],
    defaults: dict,
    write: Callable[[dict], None],
    done: set[str] = frozenset(),
    shard: tuple[int, int] | None = None,
    sidecars: bool = False,
    overwrite: bool = False,
    on_item: Callable[[BatchItem, dict | None], None] = lambda item, line: None,
) -> BatchSummary:
    """Ask every item in order, writing one line each; on_item(item, line or None when skipped) for progress.

    An item's prompt prefix (its images' tokens) is stored in the prefix cache only when a later item of the batch
    shows the same images (reused_images): a batch of distinct images writes no prefix state, where each would be
    written for nothing (a 13-tile photo's is 20 MB on 256M). Stored states are read by every item."""
    summary = BatchSummary()
    structured = defaults.get("json_schema") is not None

    items = list(items)
    targets = [sidecar_path(item, structured or item.json_schema is not None) if sidecars else None for item in items]
    skipped = [
        item.id in done or not in_shard(item.id, shard) or bool(target and target.exists() and not overwrite)
        for item, target in zip(items, targets, strict=True)
    ]
    answered = [index for index, skip in enumerate(skipped) if not skip]
    store_prefix = dict(zip(answered, reused_images([items[index] for index in answered]), strict=True))
    for index, (item, target) in enumerate(zip(items, targets, strict=True)):
        if skipped[index]:
            summary.skipped += 1
            on_item(item, None)
            continue
        line = answer_item(model, item, defaults, store_prefix=store_prefix[index])
        if "error" not in line and target is not None:
            try:
                write_sidecar(target, line)
            except SmolcliError as error:  # a sidecar path that is a device or a FIFO: this item's error
                line = {"id": item.id, "error": error.text(_item_spelling)}
        if "error" in line:
            summary.failed += 1
        else:
            summary.answered += 1
        write(line)
        on_item(item, line)
    return summary
