"""Whole or nothing on disk: build beside the target under a hidden name, then rename it into place.

A stage is a hidden folder (or file) in the target's own folder, so the rename is one step on
one disk. It is removed whatever happens: a build that fails leaves nothing that looks whole.
Folder stages are named `<prefix><pid>-<random>`, so `remove_abandoned` can clear the ones of
a process that was killed mid-build.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from smolcli.errors import BadInput, SmolcliError


@contextmanager
def stage_beside(target: Path, prefix: str) -> Iterator[Path]:
    """An empty hidden folder beside `target`, removed on exit with whatever is still in it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=target.parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def staged_folder(target: Path, prefix: str, what: str, is_whole: Callable[[], bool]) -> Iterator[Path]:
    """A stage that replaces the folder `target` when the block ends without an error (see put_in_place)."""
    with stage_beside(target, prefix) as stage:
        yield stage
        put_in_place(stage, target, what, is_whole)


def put_in_place(stage: Path, target: Path, what: str, is_whole: Callable[[], bool]) -> None:
    """Rename `stage` to `target`, replacing it; when another run put its own target there first, keep that
    one if is_whole() says it is complete, else say what to do."""
    if target.exists():
        shutil.rmtree(target)
    try:
        os.replace(stage, target)
    except OSError:
        if not is_whole():
            raise SmolcliError(f"{target}: could not put {what} in place; remove the folder and run again") from None


def swap_in(stage: Path, target: Path, commit: Callable[[], None] = lambda: None) -> None:
    """Rename `stage` to `target`, keeping the folder it replaces aside until commit() returns:
    when the rename or commit() fails, `target` is as it was."""
    previous = None
    if target.exists():
        previous = target.with_name(f".replaced-{target.name}-{uuid.uuid4().hex[:8]}")
        os.replace(target, previous)
    moved_in = False
    try:
        os.replace(stage, target)
        moved_in = True
        commit()
    except BaseException:
        if moved_in:
            shutil.rmtree(target, ignore_errors=True)
        if previous is not None:
            os.replace(previous, target)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def check_replaceable(target: Path) -> None:
    """BadInput when `target` exists and is not a regular file (a device, a FIFO, a socket, a folder): a rename
    would put a plain file where it was (`/save /dev/full` left a file in /dev), so it is refused instead."""
    try:
        mode = os.stat(target).st_mode  # through a symbolic link: what it points at is what would be replaced
    except FileNotFoundError:
        return
    except ValueError:
        raise BadInput(f"{target!r}: a path cannot hold a NUL character") from None
    except OSError:
        return  # a loop or a name too long: the write itself says what is wrong
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise BadInput(f"{target}: is {kind}, not a regular file; give the path of a file to write")


_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
}


@contextmanager
def staged_file(target: Path) -> Iterator[Path]:
    """A hidden temporary name beside `target`: renamed over it when the block ends without an error, else removed.
    A target that exists and is not a regular file is refused before anything is written."""
    check_replaceable(target)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield temp
        check_replaceable(target)  # it may have become one meanwhile
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_abandoned(folder: Path, prefix: str) -> None:
    """Stages in `folder` of builds whose process is gone (killed mid-build): never reused, only removed."""
    if not folder.is_dir():
        return
    for stage in folder.glob(f"{prefix}*"):
        match = re.match(rf"{re.escape(prefix)}(\d+)-", stage.name)
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(stage, ignore_errors=True)


def replace_together(moves: list[tuple[Path, Path]], stage: Path) -> None:
    """Rename each (staged, target) over its target: all of them, or none (the targets stay as they were).

    Every target that exists is first hard-linked into `stage` (so it never goes missing for a reader);
    when any rename fails, the new files already in place are taken out and those copies put back.
    """
    kept: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for index, (_, target) in enumerate(moves):
            if target.exists():
                keep = stage / f"previous-{index}-{target.name}"
                try:
                    os.link(target, keep)
                except OSError:  # no hard links here (some network or FAT disks): move it aside instead
                    os.replace(target, keep)
                kept.append((keep, target))
        for staged, target in moves:
            os.replace(staged, target)
            placed.append(target)
    except BaseException:
        for target in placed:
            target.unlink(missing_ok=True)
        for keep, target in kept:
            os.replace(keep, target)
        raise
