"""A folder of cache entries kept under a size bound, shared by the embedding cache and the prefix cache.

Each entry is written to a temporary name and renamed into place, so readers in other processes see a whole
entry or none. The folder is kept under its bound by dropping the entries used longest ago; a hit touches its
file. An entry its reader cannot parse is a miss and is removed (the next writer stores it again).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, TypeVar

from smolcli.errors import SmolcliError
from smolcli.util.atomic_file import write_atomically

STALE_TEMP_SECONDS = 3600  # a temp file this old belongs to a writer that died
Parsed = TypeVar("Parsed")


def max_bytes_from_env(name: str, default: int) -> int:
    """A size bound from an environment variable (bytes), `default` when unset; a bad value is one clear line."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise SmolcliError(f"{name}={value!r} is not a size: set it to a number of bytes, e.g. 1073741824")
    return limit


class LruFolder:
    """Entries (files named `*<suffix>`) in `folder`, at most max_bytes in all, least recently used dropped first."""

    def __init__(self, folder: Path, suffix: str, max_bytes: int):
        self.folder = Path(folder)
        self.suffix = suffix
        self.max_bytes = max_bytes

    def read(self, name: str, parse: Callable[[bytearray], Parsed | None]) -> Parsed | None:
        """parse(the entry's bytes), or None when it is missing or parse refuses it (then it is removed)."""
        path = self.folder / name
        try:
            with open(path, "rb") as file:
                data = bytearray(os.fstat(file.fileno()).st_size)  # read in place: one copy of a large entry
                del data[file.readinto(data) :]
        except OSError:
            return None
        parsed = parse(data)
        if parsed is None:
            remove_entry(path)
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:
            pass
        return parsed

    def write(self, name: str, data: bytes, *more: bytes) -> bool:
        """Store an entry (atomically; more: further parts after data) and evict down to the bound; False when it
        was not stored: larger than the bound, or a full disk or unwritable folder (that only means the next run
        computes it again)."""
        if len(data) + sum(len(part) for part in more) > self.max_bytes:
            return False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(self.folder / name, data, *more)
            self.evict()
        except OSError:
            return False
        return True

    def remove(self, name: str) -> None:
        """Drop one entry (its reader found it unusable after parsing it)."""
        remove_entry(self.folder / name)

    def info(self) -> tuple[int, int]:
        """(entries, bytes)."""
        entries = self.entries()
        return len(entries), sum(size for _, size, _ in entries)

    def clear(self) -> int:
        """Remove every entry (and stray temp files); the number of entries removed.

        SmolcliError when some could not be removed (a read-only or foreign folder): never counted as removed."""
        entries = self.entries()
        removed = sum(remove_entry(path) for path, _, _ in entries)
        for path in self.temp_files():
            remove_entry(path)
        if removed < len(entries):
            raise SmolcliError(
                f"{self.folder}: removed {removed} of {len(entries)} entries; {len(entries) - removed} could not be "
                "removed (a read-only folder, or another user's files); check the folder's permissions"
            )
        return removed

    def evict(self) -> None:
        entries = sorted(self.entries(), key=lambda entry: entry[2])  # oldest use first
        total = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            remove_entry(path)
            total -= size
        stale = time.time() - STALE_TEMP_SECONDS
        for path in self.temp_files():
            try:
                if path.stat().st_mtime < stale:
                    remove_entry(path)
            except OSError:
                pass

    def entries(self) -> list[tuple[Path, int, float]]:
        """(path, size, last use) of each entry; files vanishing meanwhile (other processes) are skipped."""
        found = []
        try:
            scan = list(os.scandir(self.folder))
        except OSError:
            return found
        for item in scan:
            if item.name.endswith(self.suffix) and not item.name.startswith("."):
                try:
                    stat = item.stat()
                except OSError:
                    continue
                found.append((Path(item.path), stat.st_size, stat.st_mtime))
        return found

    def temp_files(self) -> list[Path]:
        return list(self.folder.glob(".*.tmp")) if self.folder.is_dir() else []


class LruStore:
    """A cache over an LruFolder, as `smolcli cache` sees it: where it is, its bound, what it holds, clear."""

    def __init__(self, folder: Path, suffix: str, max_bytes: int):
        self.entries = LruFolder(folder, suffix, max_bytes)
        self.folder, self.max_bytes = self.entries.folder, max_bytes

    def info(self) -> tuple[int, int]:
        """(entries, bytes)."""
        return self.entries.info()

    def clear(self) -> int:
        """Remove every entry (and stray temp files); the number removed (SmolcliError when some could not be)."""
        return self.entries.clear()


def remove_entry(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return True  # another process removed it first
    except OSError:
        return False
    return True
