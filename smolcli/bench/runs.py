"""`smolcli bench`: how fast SmolVLM runs on this machine, with a random model in a release's real shapes.

Nothing is downloaded. A random-weight checkpoint of the chosen shape is written once, converted
once per (quant, mmproj type) pair, and kept under $SMOLCLI_HOME/bench. Each measured run is a
fresh `smolcli ask --json --ignore-eos --no-cache` process about the same 1024x768 photo-like
PNG, so its peak RSS is its own and nothing carries over between runs; runs interleave the
detail settings (--max-tiles, --image-size) and the report gives per-setting medians.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from smolcli.bench.encoder_throughput import MATMUL_SECONDS, MATMUL_SIZE, encoder_flops_per_tile, matmul_reference
from smolcli.bench.files import IMAGE_HEIGHT, IMAGE_WIDTH, BenchFiles, Report, prepare_files
from smolcli.doctor.system_info import versions
from smolcli.errors import SmolcliError
from smolcli.models.smolvlm_shapes import SHAPES, image_seq_len
from smolcli.runtime.vision.image_tiles import TileSize, edge_for_image_size, edge_for_max_tiles
from smolcli.util.report import quiet
from smolcli.util.user_cache import HOME_ENV

QUESTION = "What is in this image?"


# --- what to measure ------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One detail setting: the flags given to `smolcli ask`, and the longest edge they lead to."""

    label: str
    args: tuple[str, ...]
    longest_edge: int

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-") or "default"


@dataclass(frozen=True)
class BenchOptions:
    shape: str = "256m"
    quant: str = "Q4_K_M"
    mmproj_type: str = "Q8_0"
    tokens: int = 32
    threads: int | None = None
    repeats: int = 3
    max_tiles: tuple[int, ...] = ()
    image_sizes: tuple[int, ...] = ()


def shape_named(name: str) -> str:
    key = name.strip().lower()
    if key not in SHAPES:
        raise SmolcliError(f"unknown shape {name!r}: choose one of {', '.join(SHAPES)}")
    return key


def default_threads() -> int:
    from smolcli.runtime.llama.engine import default_threads as engine_default

    return engine_default()  # what `smolcli ask` uses without --threads


def check_options(options: BenchOptions) -> BenchOptions:
    """The options with names normalized; a SmolcliError naming the fix for anything unusable."""
    from smolcli.convert import MMPROJ_TYPES, QUANT_TYPES
    from smolcli.convert.quantize import parse_quant
    from smolcli.util.threads import check_threads

    shape = shape_named(options.shape)
    quant = parse_quant(options.quant, QUANT_TYPES, "quant type (--quant)")
    mmproj_type = parse_quant(options.mmproj_type, MMPROJ_TYPES, "mmproj type (--mmproj-type)")
    for flag, value in (("--tokens", options.tokens), ("--repeats", options.repeats)):
        if value is not None and value < 1:
            raise SmolcliError(f"{flag} must be at least 1, not {value}")
    for flag, values in (("--max-tiles", options.max_tiles), ("--image-size", options.image_sizes)):
        for value in values:
            if value < 1:
                raise SmolcliError(f"{flag} must be at least 1, not {value}")
    threads = check_threads(options.threads) or default_threads()
    return BenchOptions(
        shape,
        quant,
        mmproj_type,
        options.tokens,
        threads,
        options.repeats,
        tuple(options.max_tiles),
        tuple(options.image_sizes),
    )


def tile_size_of_shape(shape: str) -> TileSize:
    entry = SHAPES[shape]
    return TileSize(tile=entry["vision"]["image_size"], default_edge=entry["longest_edge"])


def settings_for(shape: str, max_tiles: tuple[int, ...], image_sizes: tuple[int, ...]) -> list[Setting]:
    """The model's own detail first, then each --max-tiles and --image-size, in order, without repeats.

    The longest edges come from the shape alone, so a setting the model cannot use fails here,
    before anything is built.
    """
    size = tile_size_of_shape(shape)
    settings = [Setting("default", (), size.default_edge)]
    for n in max_tiles:
        edge = edge_for_max_tiles([(IMAGE_WIDTH, IMAGE_HEIGHT)], n, size)
        settings.append(Setting(f"--max-tiles {n}", ("--max-tiles", str(n)), edge))
    for pixels in image_sizes:
        settings.append(
            Setting(f"--image-size {pixels}", ("--image-size", str(pixels)), edge_for_image_size(pixels, size))
        )
    unique: dict[str, Setting] = {}
    for setting in settings:
        unique.setdefault(setting.label, setting)
    return list(unique.values())


@contextmanager
def _smolcli_home(home: Path) -> Iterator[None]:
    previous = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(home)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(HOME_ENV, None)
        else:
            os.environ[HOME_ENV] = previous


def run_home(files: BenchFiles, setting: Setting) -> Path:
    """SMOLCLI_HOME of the runs of one setting: its resized mmproj copy stays there, no setting evicts another's."""
    return files.folder / "runs" / setting.slug


def prewarm(files: BenchFiles, setting: Setting) -> None:
    """Make the mmproj copy a non-default setting uses now, so that no timed run pays for writing it."""
    from smolcli.runtime.gguf.gguf_file import read_gguf
    from smolcli.runtime.vision.mmproj_variant import with_longest_edge

    home = run_home(files, setting)
    home.mkdir(parents=True, exist_ok=True)
    with _smolcli_home(home):
        with_longest_edge(read_gguf(files.mmproj), setting.longest_edge)


# --- the runs ------------------------------------------------------------------------------


def ask_command(files: BenchFiles, setting: Setting, tokens: int, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "smolcli",
        "ask",
        "-m",
        str(files.model),
        "--mmproj",
        str(files.mmproj),
        "-i",
        str(files.image),
        "--json",
        "--ignore-eos",
        "--no-cache",
        "-n",
        str(tokens),
        "--threads",
        str(threads),
        *setting.args,
        QUESTION,
    ]


def run_once(files: BenchFiles, setting: Setting, tokens: int, threads: int, flops_per_tile: int) -> dict:
    """One fresh `smolcli ask` process: its own figures, and its wall time seen from here."""
    env = {**os.environ, HOME_ENV: str(run_home(files, setting))}
    started = time.perf_counter()
    done = subprocess.run(ask_command(files, setting, tokens, threads), capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        last = lines[-1].removeprefix("error: ") if lines else "no message"
        raise SmolcliError(f"`smolcli ask` failed for setting {setting.label} (exit {done.returncode}): {last}")
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise SmolcliError(
            f"`smolcli ask --json` printed no JSON for setting {setting.label}; rerun it by hand to see why"
        ) from None
    usage, timings = report["usage"], report["timings"]
    tiles = usage["images_encoded"]
    load, encode, prefill, decode = (
        timings["load_s"],
        timings["image_encode_s"],
        timings["prefill_s"],
        timings["decode_s"],
    )
    return {
        "longest_edge": report.get("image_longest_edge"),
        "tiles": tiles,
        "image_tokens": usage["image_tokens"],
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "load_s": load,
        "encode_s": encode,
        "encode_s_per_tile": encode / tiles if tiles else 0.0,
        "prefill_s": prefill,
        "prefill_tokens_per_s": usage["prompt_tokens"] / prefill if prefill > 0 else 0.0,
        "decode_s": decode,
        "decode_tokens_per_s": usage["completion_tokens"] / decode if decode > 0 else 0.0,
        "time_to_first_token_s": load + encode + prefill,
        "wall_s": wall,
        "peak_rss_bytes": report["peak_memory_bytes"],
        "encoder_gflops": flops_per_tile * tiles / encode / 1e9 if encode > 0 else 0.0,
    }


def medians(runs: list[dict]) -> dict:
    """Per-figure medians; counts (tiles, tokens) stay whole numbers."""
    summary = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        if any(value is None for value in values):
            summary[key] = None
        elif all(isinstance(value, int) for value in values):
            summary[key] = statistics.median_low(values)
        else:
            summary[key] = statistics.median(values)
    return summary


def machine(threads: int) -> dict:
    import platform

    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if not cpu and sys.platform == "darwin":
        try:
            cpu = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True
            ).stdout.strip()
        except OSError:
            pass
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cores_available": default_threads(),
        "threads": threads,
        "platform": platform.platform(),
    }


def run_bench(options: BenchOptions, report: Report = quiet) -> dict:
    """Build (or reuse) the files, measure the matmul reference, run every setting `repeats` times, interleaved."""
    options = check_options(options)
    shape, threads = options.shape, options.threads
    settings = settings_for(shape, options.max_tiles, options.image_sizes)
    files, reused = prepare_files(shape, options.quant, options.mmproj_type, threads, report)
    if reused:
        report(f"reusing {files.model.name} + {files.mmproj.name} in {files.folder}")
    for setting in settings:
        prewarm(files, setting)

    report(
        f"numpy matmul reference: {MATMUL_SECONDS:.0f} s of float32 {MATMUL_SIZE}x{MATMUL_SIZE} products on {threads} thread{'s' if threads != 1 else ''}"
    )
    reference = matmul_reference(threads)
    flops = encoder_flops_per_tile(shape)

    runs: dict[str, list[dict]] = {setting.label: [] for setting in settings}
    total, index = options.repeats * len(settings), 0
    for _ in range(options.repeats):
        for setting in settings:
            index += 1
            report(
                f"run {index}/{total} ({setting.label}): smolcli ask, {options.tokens} tokens, {threads} threads ..."
            )
            run = run_once(files, setting, options.tokens, threads, flops)
            report(f"  {run['wall_s']:.1f} s, {run['tiles']} tiles, peak RSS {run['peak_rss_bytes'] / 1e9:.2f} GB")
            runs[setting.label].append(run)

    results = []
    for setting in settings:
        summary = medians(runs[setting.label])
        if reference:
            summary["encoder_fraction_of_reference"] = summary["encoder_gflops"] / reference["gflops"]
        results.append({"setting": setting.label, "args": list(setting.args), **summary, "runs": runs[setting.label]})

    return {
        "shape": shape,
        "quant": options.quant,
        "mmproj_type": options.mmproj_type,
        "tokens": options.tokens,
        "threads": threads,
        "repeats": options.repeats,
        "image": {"path": str(files.image), "width": IMAGE_WIDTH, "height": IMAGE_HEIGHT},
        "question": QUESTION,
        "model": str(files.model),
        "mmproj": str(files.mmproj),
        "reused_files": reused,
        "machine": machine(threads),
        "versions": versions(),
        "image_tokens_per_tile": image_seq_len(SHAPES[shape]),
        "encoder": {"gflop_per_tile": flops / 1e9, "matmul_reference": reference},
        "settings": results,
    }
