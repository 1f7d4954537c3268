"""Fault injection for the reliability tests: the real CLI in a subprocess, tiny disks and read-only folders.

Disks are tmpfs mounts (the tests run as root in CI); where mounting is not permitted the tests that
need one skip and say why. Every check asks for the same things: the exit code, one line that names
the thing, no traceback, nothing left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

SMOLCLI = [sys.executable, "-m", "smolcli"]


def smolcli(*args, env: dict | None = None, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*SMOLCLI, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout, **kwargs
    )


def in_process(*args) -> subprocess.CompletedProcess:
    """The same CLI through Typer's runner, for checks that need no process of their own (faster)."""
    from typer.testing import CliRunner

    from smolcli.cli.app import app

    result = CliRunner().invoke(app, list(map(str, args)))
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def error_line(done: subprocess.CompletedProcess, *words: str, code: int = 1, progress: bool = False) -> str:
    """A failure the user can act on: `code`, one 'error:' line naming the thing, no traceback, nothing on stdout.

    progress: progress lines (a conversion's) may come before the error line.
    """
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.stdout == "", done.stdout
    lines = done.stderr.strip().splitlines()
    assert lines, "no message at all"
    if not progress:
        assert len(lines) == 1, done.stderr
    assert done.stderr.count("error:") == 1, done.stderr
    line = lines[-1]
    assert line.startswith("error: "), done.stderr
    assert "unexpected" not in line and "Errno" not in line, line
    for word in words:
        assert word in line, (word, line)
    return line


def hidden_leftovers(folder: Path) -> list[str]:
    """Stages, temporary names and logs a failed run must not leave."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith((".tmp", ".log")))


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path` (a full disk on demand); skips where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    done = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}): a full disk needs one")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextmanager
def read_only_folder(path: Path, files: dict[str, bytes] | None = None) -> Iterator[Path]:
    """A read-only file system at `path`, holding `files` (chmod does not stop root; a read-only mount does)."""
    with small_disk(path, "8M"):
        for name, data in (files or {}).items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
        done = _mount("-o", "remount,ro", str(path))
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {done.stderr.strip()}")
        yield path
