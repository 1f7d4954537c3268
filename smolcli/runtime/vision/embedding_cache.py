"""Vision-encoder outputs kept on disk, one file per image tile, so a known image is never encoded twice.

The entries live in an LruFolder (util/lru_folder.py): written atomically, kept under a size bound by
dropping the entries used longest ago, an unreadable entry a miss that is removed.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smolcli.runtime.gguf.file_identity import content_digest
from smolcli.util.lru_folder import LruStore
from smolcli.util.lru_folder import max_bytes_from_env as bytes_bound
from smolcli.util.user_cache import cache_dir

FORMAT_VERSION = 1
MAX_BYTES_ENV = "SMOLCLI_EMBED_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 1 << 30
SUFFIX = ".emb"
# magic, version, n_tokens, n_embd, crc32 of the floats
HEADER = struct.Struct("<4sIIII")
MAGIC = b"SMEC"


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
    return bytes_bound(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)


class EmbeddingCache(LruStore):
    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES):
        super().__init__(folder, SUFFIX, max_bytes)

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
        return self.entries.read(key.file_name(), lambda data: _parse(data, key))

    def put(self, key: EmbeddingKey, embeddings: np.ndarray) -> None:
        """Store a copy; a full disk or an unwritable folder only means the next run encodes again."""
        floats = np.ascontiguousarray(embeddings, dtype="<f4").reshape(-1)
        if floats.size != key.n_tokens * key.n_embd:
            raise ValueError(f"{floats.size} floats for {key.n_tokens} x {key.n_embd} embeddings")
        payload = floats.tobytes()
        header = HEADER.pack(MAGIC, FORMAT_VERSION, key.n_tokens, key.n_embd, zlib.crc32(payload))
        self.entries.write(key.file_name(), header + payload)


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
