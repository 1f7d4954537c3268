"""A file's content digest, hashed once: remembered by (path, size, mtime_ns) in memory and on disk.

An mmproj is hundreds of MB; hashing it on every run would cost more than the cache saves.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from smolcli.util.atomic_file import write_atomically

_memo: dict[tuple[str, int, int], str] = {}


def content_digest(path: Path, memo_folder: Path | None = None) -> str:
    path = Path(path).resolve()
    stat = path.stat()
    identity = (str(path), stat.st_size, stat.st_mtime_ns)
    if identity in _memo:
        return _memo[identity]
    memo_file = None
    if memo_folder is not None:
        name = hashlib.blake2b(repr(identity).encode(), digest_size=20).hexdigest()
        memo_file = Path(memo_folder) / name
        try:
            digest = memo_file.read_text().strip()
            if len(digest) == 40:
                _memo[identity] = digest
                return digest
        except OSError:
            pass
    digest = hash_file(path, hashlib.blake2b(digest_size=20))
    _memo[identity] = digest
    if memo_file is not None:
        _remember(memo_file, digest)
    return digest


def hash_file(path: Path, digest=None) -> str:
    """Hex digest of a file read a megabyte at a time (sha256 unless another hashlib object is given)."""
    digest = digest if digest is not None else hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _remember(memo_file: Path, digest: str) -> None:
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(memo_file, digest.encode())
    except OSError:
        pass  # only means hashing again next run
