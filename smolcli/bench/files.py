"""The files `smolcli bench` measures with, built once and kept under $SMOLCLI_HOME/bench.

A random-weight checkpoint in a release's real shapes, written once per shape; its converted
(quant, mmproj type) pair, converted once per pair and marked complete last; and one photo-like
PNG that every run reads. Builds go into a hidden staging folder that is renamed into place when
whole, so a build that fails or is killed leaves nothing that a later run would reuse.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from smolcli import __version__
from smolcli.errors import DiskFull, SmolcliError
from smolcli.models.smolvlm_shapes import SHAPES
from smolcli.synthetic.build_marker import ggufs_readable, read_marker
from smolcli.synthetic.pair_files import PairFiles
from smolcli.util.disk_full import DISK_FULL
from smolcli.util.report import quiet
from smolcli.util.staging import remove_abandoned, staged_folder
from smolcli.util.user_cache import HOME_ENV, cache_dir

IMAGE_WIDTH, IMAGE_HEIGHT = 1024, 768
SOURCE_DTYPE = "BF16"  # what the releases ship
MARKER = "complete.json"  # written last into a converted pair's folder
STAGE_PREFIX = ".building-"

Report = Callable[[str], None]


BenchFiles = PairFiles  # the bench's pair, in $SMOLCLI_HOME/bench


def bench_folder() -> Path:
    return cache_dir() / "bench"


def pair_name(shape: str) -> str:
    return f"bench-{shape}"


def files_for(shape: str, quant: str, mmproj_type: str) -> BenchFiles:
    shape_folder = bench_folder() / shape
    folder = shape_folder / f"{quant}-mmproj-{mmproj_type}"
    name = pair_name(shape)
    return BenchFiles(
        folder,
        shape_folder / f"checkpoint-{SOURCE_DTYPE}",
        folder / f"{name}-{quant}.gguf",
        folder / f"mmproj-{name}-{mmproj_type}.gguf",
        bench_folder() / f"photo-{IMAGE_WIDTH}x{IMAGE_HEIGHT}.png",
    )


def _marker(shape: str, quant: str, mmproj_type: str) -> dict:
    return {"smolcli": __version__, "shape": shape, "quant": quant, "mmproj_type": mmproj_type}


def pair_is_complete(files: BenchFiles, shape: str, quant: str, mmproj_type: str) -> bool:
    # another converter version may write other files
    return read_marker(files.folder / MARKER) == _marker(shape, quant, mmproj_type) and ggufs_readable(
        files.model, files.mmproj
    )


def parameter_count(shape: str) -> int:
    from math import prod

    from smolcli.synthetic.random_checkpoint import tensor_shapes

    return sum(prod(dims) for dims in tensor_shapes(SHAPES[shape]).values())


def _stage(final: Path, is_whole: Callable[[], bool]) -> ContextManager[Path]:
    """A hidden folder beside `final`, renamed into place when the block ends whole (another bench run
    that finished the same build first wins if its files are whole); removed on any failure."""
    return staged_folder(final, STAGE_PREFIX, "the bench files", is_whole)


@contextmanager
def _building(what: str, folder: Path, shape: str | None = None) -> Iterator[None]:
    """OSErrors while writing (a full disk above all) become one line that says what to do."""
    try:
        yield
    except OSError as error:
        if error.errno in DISK_FULL:
            # bf16 checkpoint, bf16 intermediate and the pair: at most about 6 bytes a parameter
            need = (
                f" (the {shape} bench files take up to about {parameter_count(shape) * 6 / 1e9:.1f} GB while building)"
                if shape
                else ""
            )
            raise DiskFull(
                f"the disk under {folder} filled up while {what}{need}; "
                f"free some space or set {HOME_ENV} to a folder on a larger disk"
            ) from None
        raise SmolcliError(
            f"could not write {error.filename or folder} while {what}: {error.strerror or error}; "
            f"make the folder writable or set {HOME_ENV} to another folder"
        ) from None


def prepare_files(
    shape: str, quant: str, mmproj_type: str, threads: int | None = None, report: Report = quiet
) -> tuple[BenchFiles, bool]:
    """The random checkpoint, its converted pair and the photo, built unless already whole: (files, reused pair)."""
    from smolcli.runtime.llama import llama_logging

    files = files_for(shape, quant, mmproj_type)
    shape_folder = files.checkpoint.parent
    remove_abandoned(shape_folder, STAGE_PREFIX)
    _make_photo(files.image)
    if pair_is_complete(files, shape, quant, mmproj_type):
        return files, True

    if not (files.checkpoint / "model.safetensors").is_file():
        report(
            f"writing a random-weight SmolVLM {shape} checkpoint ({parameter_count(shape) / 1e6:.0f}M parameters, "
            f"{SOURCE_DTYPE}) to {files.checkpoint} (once; later runs reuse it)"
        )
        started = time.perf_counter()
        checkpoint_is_whole = (files.checkpoint / "model.safetensors").is_file
        with (
            _building("writing the random checkpoint", shape_folder, shape),
            _stage(files.checkpoint, checkpoint_is_whole) as stage,
        ):
            from smolcli.synthetic.random_checkpoint import write_random_checkpoint

            write_random_checkpoint(stage, shape, "SmolVLM", SOURCE_DTYPE)
        report(f"  wrote it in {time.perf_counter() - started:.0f} s")

    report(f"converting it to {quant} + mmproj {mmproj_type} in {files.folder} (once per pair)")
    llama_logging.configure(False)
    started = time.perf_counter()
    pair_is_whole = partial(pair_is_complete, files, shape, quant, mmproj_type)
    with _building("converting the checkpoint", shape_folder, shape), _stage(files.folder, pair_is_whole) as stage:
        from smolcli.convert import convert_checkpoint

        def relay(message: str) -> None:
            report(message.replace(str(stage), str(files.folder)))

        convert_checkpoint(
            files.checkpoint, stage, quant, mmproj_type, name=pair_name(shape), report=relay, threads=threads
        )
        (stage / MARKER).write_text(json.dumps(_marker(shape, quant, mmproj_type)))
    report(f"  converted in {time.perf_counter() - started:.0f} s")
    return files, False


def _make_photo(path: Path) -> None:
    if path.is_file():
        return
    import io

    from smolcli.synthetic.images import photo_like
    from smolcli.util.atomic_file import write_atomically

    buffer = io.BytesIO()
    photo_like(IMAGE_WIDTH, IMAGE_HEIGHT).save(buffer, format="PNG")  # lossless: every run decodes the same pixels
    with _building("writing the test photo", path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, buffer.getvalue())
