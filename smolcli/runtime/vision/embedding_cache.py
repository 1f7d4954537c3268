"""Vision-encoder outputs kept on disk, one file per image tile, so a known image is never encoded twice.

Each entry is written to a temporary name and renamed into place, so readers in other
processes see a whole entry or none. The folder is kept under a size bound by dropping the
entries used longest ago; a hit touches its file. An unreadable entry is a miss and is removed.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smolcli.errors import SmolcliError
from smolcli.runtime.gguf.file_identity import content_digest
from smolcli.util.atomic_file import write_atomically
from smolcli.util.user_cache import cache_dir

FORMAT_VERSION = 1
MAX_BYTES_ENV = "SMOLCLI_EMBED_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 1 << 30
SUFFIX = ".emb"
# magic, version, n_tokens, n_embd, crc32 of the floats
HEADER = struct.Struct("<4sIIII")
MAGIC = b"SMEC"
STALE_TEMP_SECONDS = 3600  # a temp file this old belongs to a writer that died


@dataclass(frozen=True)
class EmbeddingKey:
    image: str  # digest of the RGB pixels and size given to mtmd
    mmproj: str  # digest of the vision-encoder file
    tile: int  # the chunk's index among its image's chunks
    n_tokens: int
    n_embd: int

    def file_name(self) -> str:
        text = f"v{FORMAT_VERSION}|{self.image}|{self.mmproj}|{self.tile}|{self.n_tokens}|{self.n_embd}"
        return hashlib.blake2b(text.encode(), digest_size=20).hexdigest() + SUFFIX


def image_digest(width: int, height: int, pixels: bytes) -> str:
    digest = hashlib.blake2b(struct.pack("<II", width, height), digest_size=20)
    digest.update(pixels)
    return digest.hexdigest()


def max_bytes_from_env() -> int:
    value = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_BYTES
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise SmolcliError(f"{MAX_BYTES_ENV}={value!r} is not a size: set it to a number of bytes, e.g. 1073741824")
    return limit


class EmbeddingCache:
    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder = Path(folder)
        self.max_bytes = max_bytes

    @classmethod
    def default(cls) -> "EmbeddingCache":
        return cls(cache_dir() / "embeddings", max_bytes_from_env())

    def file_digest(self, path: Path) -> str:
        """The content digest of a vision-encoder file, hashed once per version of the file."""
        return content_digest(path, self.folder / "file-digests")

    def encoder_digest(self, path: Path, encoder_tag: str | None = None) -> str:
        """What a tile's key holds of its encoder: the vision file's digest, and for an encoder other than mtmd
        its tag (another encoder, form or graph version gives other numbers: their own entries)."""
        digest = self.file_digest(path)
        return digest if encoder_tag is None else f"{digest}-{encoder_tag}"

    def get(self, key: EmbeddingKey) -> np.ndarray | None:
        """The stored float32 embeddings (n_tokens * n_embd, writable), or None."""
        path = self.folder / key.file_name()
        try:
            with open(path, "rb") as file:
                data = bytearray(file.read())
        except OSError:
            return None
        embeddings = _parse(data, key)
        if embeddings is None:
            _remove(path)
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:
            pass
        return embeddings

    def put(self, key: EmbeddingKey, embeddings: np.ndarray) -> None:
        """Store a copy; a full disk or an unwritable folder only means the next run encodes again."""
        floats = np.ascontiguousarray(embeddings, dtype="<f4").reshape(-1)
        if floats.size != key.n_tokens * key.n_embd:
            raise ValueError(f"{floats.size} floats for {key.n_tokens} x {key.n_embd} embeddings")
        payload = floats.tobytes()
        header = HEADER.pack(MAGIC, FORMAT_VERSION, key.n_tokens, key.n_embd, zlib.crc32(payload))
        if HEADER.size + len(payload) > self.max_bytes:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(self.folder / key.file_name(), header + payload)
            self._evict()
        except OSError:
            pass

    def info(self) -> tuple[int, int]:
        """(entries, bytes)."""
        entries = self._entries()
        return len(entries), sum(size for _, size, _ in entries)

    def clear(self) -> int:
        """Remove every entry (and stray temp files); the number of entries removed.

        SmolcliError when some could not be removed (a read-only or foreign folder): never counted as removed."""
        entries = self._entries()
        removed = sum(_remove(path) for path, _, _ in entries)
        for path in self._temp_files():
            _remove(path)
        if removed < len(entries):
            raise SmolcliError(
                f"{self.folder}: removed {removed} of {len(entries)} entries; {len(entries) - removed} could not be "
                "removed (a read-only folder, or another user's files); check the folder's permissions"
            )
        return removed

    def _evict(self) -> None:
        entries = sorted(self._entries(), key=lambda entry: entry[2])  # oldest use first
        total = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            _remove(path)
            total -= size
        stale = time.time() - STALE_TEMP_SECONDS
        for path in self._temp_files():
            try:
                if path.stat().st_mtime < stale:
                    _remove(path)
            except OSError:
                pass

    def _entries(self) -> list[tuple[Path, int, float]]:
        """(path, size, last use) of each entry; files vanishing meanwhile (other processes) are skipped."""
        found = []
        try:
            scan = list(os.scandir(self.folder))
        except OSError:
            return found
        for item in scan:
            if item.name.endswith(SUFFIX) and not item.name.startswith("."):
                try:
                    stat = item.stat()
                except OSError:
                    continue
                found.append((Path(item.path), stat.st_size, stat.st_mtime))
        return found

    def _temp_files(self) -> list[Path]:
        return list(self.folder.glob(".*.tmp")) if self.folder.is_dir() else []


def _parse(data: bytearray, key: EmbeddingKey) -> np.ndarray | None:
    if len(data) < HEADER.size:
        return None
    magic, version, n_tokens, n_embd, crc = HEADER.unpack_from(data)
    expected = HEADER.size + 4 * key.n_tokens * key.n_embd
    if (magic, version, n_tokens, n_embd) != (MAGIC, FORMAT_VERSION, key.n_tokens, key.n_embd) or len(data) != expected:
        return None
    payload = memoryview(data)[HEADER.size :]
    if zlib.crc32(payload) != crc:
        return None
    return np.frombuffer(data, dtype="<f4", offset=HEADER.size)


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return True  # another process removed it first
    except OSError:
        return False
    return True
