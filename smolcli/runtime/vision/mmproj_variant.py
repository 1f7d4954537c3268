"""A copy of an mmproj whose preprocessing resizes images to another longest edge (--image-size, --max-tiles).

mtmd reads the longest edge from the file (clip.vision.preproc_image_size) and offers no
override, so the copy differs from the original in those four bytes only. Copies are kept
in the user cache for the next run, the few used last and no more.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path

from smolcli.errors import SmolcliError
from smolcli.runtime.gguf.gguf_file import GGUFSummary, read_gguf
from smolcli.runtime.vision.image_tiles import PREPROC_KEY
from smolcli.util.user_cache import cache_dir, remove_all

U32 = struct.Struct("<I")
KEPT = 3  # copies kept: a few image sizes in turn, without filling a small board's disk
SUFFIX = ".gguf"


def variants_folder() -> Path:
    return cache_dir() / "mmproj-sizes"


def with_longest_edge(mmproj: GGUFSummary, edge: int, folder: Path | None = None) -> GGUFSummary:
    """The mmproj itself when it already resizes to `edge`, else a cached copy that does."""
    current = mmproj.metadata.get(PREPROC_KEY)
    offset = mmproj.scalar_offsets.get(PREPROC_KEY)
    if current is None or offset is None:
        raise SmolcliError(
            f"{mmproj.path}: has no {PREPROC_KEY}, so {{image_size}} and {{max_tiles}} cannot change it; "
            "convert the checkpoint again with `smolcli convert`"
        )
    if current == edge:
        return mmproj
    folder = Path(folder) if folder is not None else variants_folder()
    target = folder / _variant_name(mmproj.path, edge)
    if _is_whole(target, mmproj.path, offset, edge):
        try:
            os.utime(target)  # used now: evicted last
        except OSError:
            pass
    else:  # missing, or damaged (cut short by a full disk, edited): built again, never reused as it is
        _write_variant(mmproj.path, offset, current, edge, target)
        _evict(folder, keep=target)
    return read_gguf(target)


def _is_whole(target: Path, source: Path, offset: int, edge: int) -> bool:
    """A copy is the source's size with `edge` at the key's offset; anything else is rebuilt."""
    try:
        if target.stat().st_size != source.stat().st_size:
            return False
        with open(target, "rb") as file:
            file.seek(offset)
            return U32.unpack(file.read(U32.size))[0] == edge
    except (OSError, struct.error):
        return False


def _variant_name(source: Path, edge: int) -> str:
    stat = source.stat()
    identity = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.blake2b(identity.encode(), digest_size=8).hexdigest()
    return f"{source.stem}-{edge}px-{digest}{SUFFIX}"


def _write_variant(source: Path, offset: int, current: int, edge: int, target: Path) -> None:
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, temp)
        with open(temp, "r+b") as file:
            file.seek(offset)
            if U32.unpack(file.read(U32.size))[0] != current:
                raise SmolcliError(
                    f"{source}: {PREPROC_KEY} is not stored as a 32-bit integer; convert the checkpoint again"
                )
            file.seek(offset)
            file.write(U32.pack(edge))
        os.replace(temp, target)
    except OSError as error:
        raise SmolcliError(
            f"could not write a resized-preprocessing copy of {source.name} ({source.stat().st_size // 2**20} MiB) "
            f"in {target.parent}: {error.strerror or error}; free disk space or set SMOLCLI_HOME"
        ) from None
    finally:
        try:
            temp.unlink(missing_ok=True)
        except OSError:  # its folder is not one (SMOLCLI_HOME a file): nothing was written
            pass


def _evict(folder: Path, keep: Path) -> None:
    copies = sorted(((_last_use(p), p) for p in variant_files(folder) if p != keep), reverse=True)
    for _, path in copies[KEPT - 1 :]:
        path.unlink(missing_ok=True)


def _last_use(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile by another process
        return 0.0


def variant_files(folder: Path | None = None) -> list[Path]:
    folder = Path(folder) if folder is not None else variants_folder()
    try:
        return [p for p in folder.iterdir() if p.suffix == SUFFIX and not p.name.startswith(".")]
    except OSError:
        return []


def clear_variants(folder: Path | None = None) -> tuple[int, int]:
    """Remove every stored copy: (files, bytes) removed."""
    return remove_all(variant_files(folder))
