"""The local model store: GGUF pairs under SMOLCLI_HOME and an index of what it holds.

Layout: <home>/models/index.json, and one folder per pair,
<owner>--<name>/<source>-<quant>-<mmproj type>/. A pair is built in a staging folder
beside its final place and renamed in whole; only then is the index rewritten (temp
file + rename), so the index never names a partial pair. Removal drops the entry from
the index first and deletes the files after.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from smolcli.errors import DiskFull, SmolcliError
from smolcli.runtime.gguf.file_identity import hash_file
from smolcli.util.atomic_file import write_atomically
from smolcli.util.disk_full import DISK_FULL
from smolcli.util.staging import stage_beside, swap_in
from smolcli.util.user_cache import HOME_ENV, cache_dir

try:
    import fcntl
except ImportError:  # Windows: concurrent pulls there may race on the index
    fcntl = None

INDEX_NAME = "index.json"
INDEX_FORMAT = 1
SOURCES = ("converted", "prebuilt")
STAGE_PREFIX = ".staging-"


@dataclass(frozen=True)
class StoredFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Provenance:
    """Where a pair comes from and how it was made."""

    name: str  # registry name, or the repo id
    repo_id: str  # the checkpoint's repo
    family: str
    source: str  # "converted" (by smolcli) or "prebuilt" (the publisher's GGUF files)
    source_repo: str  # the repo the bytes came from
    revision: str
    commit: str
    quant: str
    mmproj_type: str


@dataclass(frozen=True)
class StoredModel(Provenance):
    folder: str  # relative to the store root, "/"-separated
    model: StoredFile
    mmproj: StoredFile
    added: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.repo_id.lower(), self.source, self.quant, self.mmproj_type)

    @property
    def size(self) -> int:
        return self.model.size + self.mmproj.size

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "StoredModel":
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["model"] = StoredFile(**data["model"])
        values["mmproj"] = StoredFile(**data["mmproj"])
        return cls(**values)


def store_root() -> Path:
    return cache_dir() / "models"


def entry_folder(repo_id: str, source: str, quant: str, mmproj_type: str) -> str:
    return f"{repo_id.replace('/', '--')}/{source}-{quant}-{mmproj_type}"


def disk_full_error(root: Path) -> DiskFull:
    return DiskFull(
        f"no space left on the disk that holds {root}; free some space (or set {HOME_ENV} to a folder on a "
        "bigger disk) and pull again; the model store is unchanged"
    )


class ModelStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else store_root()

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_NAME

    def entries(self) -> list[StoredModel]:
        try:
            raw = self.index_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            data = json.loads(raw)
            if data.get("format", 0) > INDEX_FORMAT:
                raise SmolcliError(f"{self.index_path}: written by a newer smolcli; upgrade smolcli to use this store")
            return [StoredModel.from_json(item) for item in data["models"]]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise SmolcliError(
                f"{self.index_path}: unreadable store index ({type(error).__name__}: {error}); "
                "move it aside and pull the models again"
            ) from None

    def find(
        self, repo_id: str, source: str | None = None, quant: str | None = None, mmproj_type: str | None = None
    ) -> list[StoredModel]:
        wanted = {"source": source, "quant": quant, "mmproj_type": mmproj_type}
        return [
            entry
            for entry in self.entries()
            if entry.repo_id.lower() == repo_id.lower()
            and all(value is None or getattr(entry, key) == value for key, value in wanted.items())
        ]

    def model_path(self, entry: StoredModel) -> Path:
        return self.root / entry.folder / entry.model.name

    def mmproj_path(self, entry: StoredModel) -> Path:
        return self.root / entry.folder / entry.mmproj.name

    def is_intact(self, entry: StoredModel) -> bool:
        """Both files are there with the sizes the index recorded (a cheap check; sha256 is for verifying copies)."""
        for path, recorded in ((self.model_path(entry), entry.model), (self.mmproj_path(entry), entry.mmproj)):
            try:
                if path.stat().st_size != recorded.size:
                    return False
            except OSError:
                return False
        return True

    def add(self, origin: Provenance, build: Callable[[Path], tuple[Path, Path]]) -> StoredModel:
        """Build a pair with build(staging folder) -> (model, mmproj) inside it, then put it in the store whole."""
        folder = entry_folder(origin.repo_id, origin.source, origin.quant, origin.mmproj_type)
        final = self.root / folder
        with self._disk_full_is_clean():
            try:
                with stage_beside(final, STAGE_PREFIX) as stage:
                    model, mmproj = build(stage)
                    if model.parent != stage or mmproj.parent != stage:
                        raise AssertionError("build must write the pair straight into the staging folder")
                    entry = StoredModel(
                        **dataclasses.asdict(origin),
                        folder=folder,
                        model=StoredFile(model.name, model.stat().st_size, hash_file(model)),
                        mmproj=StoredFile(mmproj.name, mmproj.stat().st_size, hash_file(mmproj)),
                        added=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    )
                    with self._locked():
                        self._swap_in(stage, final, entry)
            finally:
                _remove_if_empty(final.parent)
        return entry

    def remove(self, doomed: list[StoredModel]) -> None:
        keys = {entry.key for entry in doomed}
        with self._disk_full_is_clean(), self._locked():
            self._write_index([entry for entry in self.entries() if entry.key not in keys])
        for entry in doomed:
            shutil.rmtree(self.root / entry.folder, ignore_errors=True)
            _remove_if_empty((self.root / entry.folder).parent)

    def _swap_in(self, stage: Path, final: Path, entry: StoredModel) -> None:
        entries = [e for e in self.entries() if e.key != entry.key] + [entry]
        # if the index cannot be written it still names the previous pair (if any): its files go back
        swap_in(stage, final, commit=lambda: self._write_index(entries))

    def _write_index(self, entries: list[StoredModel]) -> None:
        data = {"format": INDEX_FORMAT, "models": [entry.to_json() for entry in entries]}
        write_atomically(self.index_path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # two pulls at once must not drop each other's index entries
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield

    @contextmanager
    def _disk_full_is_clean(self) -> Iterator[None]:
        try:
            yield
        except DiskFull:  # the converter's own, naming its output folder: the store's says more here
            raise disk_full_error(self.root) from None
        except OSError as error:
            if error.errno in DISK_FULL:
                raise disk_full_error(self.root) from None
            raise


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
