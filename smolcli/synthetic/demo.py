"""The offline demo: a tiny random SmolVLM, converted to GGUF, asked about a drawn picture.

Nothing is downloaded. The files are built once into the user cache and reused; a
folder left half-written by an interrupted run is detected and rebuilt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from smolcli import __version__
from smolcli.synthetic.build_marker import ggufs_readable, read_marker
from smolcli.synthetic.pair_files import PairFiles
from smolcli.util.staging import remove_abandoned, staged_folder
from smolcli.util.user_cache import cache_dir

QUESTION = "What is in this picture?"
NAME = "smolvlm-tiny-random"
QUANT, MMPROJ_TYPE = "Q8_0", "F16"
MARKER = "complete.json"  # written last: its presence means every other file is whole
STAGE_PREFIX = ".demo-building-"


class DemoFiles(PairFiles):
    @classmethod
    def inside(cls, folder: Path) -> "DemoFiles":
        return cls(
            folder,
            folder / "checkpoint",
            folder / f"{NAME}-{QUANT}.gguf",
            folder / f"mmproj-{NAME}-{MMPROJ_TYPE}.gguf",
            folder / "picture.png",
        )


@dataclass(frozen=True)
class DemoResult:
    files: DemoFiles
    reused: bool
    question: str
    answer: str
    n_tokens: int


def demo_folder(home: Path | None = None) -> Path:
    return (Path(home) if home is not None else cache_dir()) / "demo"


def is_complete(files: DemoFiles) -> bool:
    marker = read_marker(files.folder / MARKER)
    # files from another smolcli version may come from an older converter
    if marker is None or marker.get("smolcli") != __version__:
        return False
    if not (files.checkpoint / "config.json").is_file() or not files.image.is_file():
        return False
    return ggufs_readable(files.model, files.mmproj)


def draw_picture(path: Path) -> None:
    """A small scene with clear shapes: sky, grass, sun, a house with a roof."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (256, 192), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 130, 256, 192), fill=(70, 160, 60))
    draw.ellipse((190, 20, 236, 66), fill=(250, 210, 40))
    draw.rectangle((50, 85, 130, 150), fill=(200, 50, 40))
    draw.polygon([(40, 88), (90, 45), (140, 88)], fill=(110, 60, 30))
    draw.rectangle((80, 115, 100, 150), fill=(90, 50, 20))
    image.save(path)


def _build(stage: Path, report: Callable[[str], None], threads: int | None) -> None:
    from smolcli.convert import convert_checkpoint
    from smolcli.synthetic.random_checkpoint import write_random_checkpoint

    files = DemoFiles.inside(stage)
    write_random_checkpoint(files.checkpoint, "tiny", "SmolVLM", "BF16")
    convert_checkpoint(files.checkpoint, stage, QUANT, MMPROJ_TYPE, name=NAME, report=report, threads=threads)
    draw_picture(files.image)
    (stage / MARKER).write_text(json.dumps({"smolcli": __version__, "question": QUESTION}))


def prepare(
    home: Path | None = None,
    report: Callable[[str], None] = lambda message: None,
    threads: int | None = None,
    rebuild: bool = False,
) -> tuple[DemoFiles, bool]:
    """The demo's files, built unless a complete set is already there: (files, reused)."""
    folder = demo_folder(home)
    files = DemoFiles.inside(folder)
    if not rebuild and is_complete(files):
        return files, True
    folder.parent.mkdir(parents=True, exist_ok=True)
    report(f"building a tiny random SmolVLM and converting it, in {folder} (once; later runs reuse it)")
    # build beside the final folder, then rename: an interrupted build never looks complete;
    # when another run finished first, its files are used if they are whole
    remove_abandoned(folder.parent, STAGE_PREFIX)
    with staged_folder(folder, STAGE_PREFIX, "the demo files", lambda: is_complete(files)) as stage:
        # name the final folder in progress lines, not the staging one that is about to vanish
        _build(stage, lambda message: report(message.replace(str(stage), str(folder))), threads)
    return files, False


def ask_about_picture(
    files: DemoFiles, question: str = QUESTION, max_tokens: int = 24, threads: int | None = None, verbose: bool = False
) -> tuple[str, int]:
    """Greedy answer of the demo model about the demo picture, through the library: (text, generated tokens)."""
    from smolcli.api.model import load

    with load(files.model, mmproj=files.mmproj, threads=threads, verbose=verbose, embedding_cache=False) as model:
        answer = model.ask(question, images=[files.image], max_tokens=max_tokens)
    return answer.text, len(answer.tokens)


def run_demo(
    home: Path | None = None,
    report: Callable[[str], None] = lambda message: None,
    max_tokens: int = 24,
    threads: int | None = None,
    verbose: bool = False,
    rebuild: bool = False,
) -> DemoResult:
    files, reused = prepare(home, report, threads, rebuild)
    answer, n_tokens = ask_about_picture(files, QUESTION, max_tokens, threads, verbose)
    return DemoResult(files, reused, QUESTION, answer, n_tokens)
