"""Shared fixtures: tiny random SmolVLM checkpoints, their converted GGUF pairs, and test images.

Everything is built once per session in a temporary folder; nothing is downloaded.

Two lanes, both run by plain `pytest`:
- the fast lane, `pytest -m "not reference"`: numpy, llama.cpp and the CLI only. It must not
  import torch or transformers; the session fails if it does (pytest_sessionfinish below).
- the slow lane, `pytest -m reference`: tests that compare against transformers/torch. A test is
  marked `reference` explicitly, or here when it uses `hf_checkpoint` or imports torch/transformers
  in its own body.
"""

from __future__ import annotations

import inspect
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torchvision_shim
from PIL import Image

from smolcli.convert import convert_checkpoint
from smolcli.synthetic.images import photo_like
from smolcli.synthetic.random_checkpoint import write_random_checkpoint

torchvision_shim.install()  # transformers imports the installed torchvision anywhere: its schemas first

# the releases ship bf16; f16 covers the other half-precision layout
SOURCE_DTYPES = {"SmolVLM": "BF16", "SmolVLM2": "F16"}
NON_WEIGHT_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
)


# the libraries only the reference lane may load
REFERENCE_MODULES = ("torch", "transformers")
_IMPORTS_REFERENCE = re.compile(
    r"^\s*(?:import|from)\s+(?:torch|transformers)\b|importorskip\(\s*[\"'](?:torch|transformers)\b", re.M
)


def _imports_reference_libraries(item) -> bool:
    try:
        return bool(_IMPORTS_REFERENCE.search(inspect.getsource(item.function)))
    except (AttributeError, OSError, TypeError):
        return False


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "hf_checkpoint" in getattr(item, "fixturenames", ()) or _imports_reference_libraries(item):
            item.add_marker(pytest.mark.reference)


_lane_errors: list[str] = []


def pytest_sessionfinish(session, exitstatus):
    """A run without any reference test must not have imported torch or transformers: it fails."""
    if any(item.get_closest_marker("reference") for item in session.items):
        return
    loaded = [name for name in REFERENCE_MODULES if name in sys.modules]
    if loaded:
        _lane_errors.append(
            f"no reference test ran, yet {' and '.join(loaded)} got imported: the fast lane "
            '(-m "not reference") must not need them; mark the test that does @pytest.mark.reference'
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for message in _lane_errors:
        terminalreporter.section("fast lane", sep="=", red=True, bold=True)
        terminalreporter.write_line(f"FAILED: {message}", red=True)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smolcli")


@pytest.fixture(autouse=True)
def private_smolcli_home(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets its own SMOLCLI_HOME: no test reads or fills the user's caches (embeddings, demo)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("SMOLCLI_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def numpy_checkpoint(workdir):
    """make(generation, dtype) -> folder written by smolcli.synthetic.random_checkpoint (numpy only, quirks kept)."""
    made: dict[tuple, Path] = {}
    seeds: dict[tuple, int] = {}

    def make(generation: str = "SmolVLM", dtype: str = "BF16", large_gain: float = 1.0) -> Path:
        """large_gain: the plain checkpoint's weights (its seed) with large-gain vision LayerNorm channels."""
        key = (generation, dtype, large_gain)
        if key not in made:
            seed = seeds.setdefault((generation, dtype), len(seeds))
            suffix = "" if large_gain == 1.0 else f"-gain{large_gain:g}"
            made[key] = write_random_checkpoint(
                workdir / f"np-{generation}-{dtype}{suffix}",
                "tiny",
                generation,
                dtype,
                seed=seed,
                large_gain=large_gain,
            )
        return made[key]

    return make


@pytest.fixture(scope="session")
def hf_checkpoint(workdir, numpy_checkpoint):
    """make(generation, dtype) -> the same random model re-saved by transformers' save_pretrained."""
    made: dict[tuple, Path] = {}

    def make(generation: str = "SmolVLM", dtype: str = "BF16", large_gain: float = 1.0) -> Path:
        key = (generation, dtype, large_gain)
        if key not in made:
            import torch
            from transformers import AutoModelForImageTextToText

            source = numpy_checkpoint(generation, dtype, large_gain)
            suffix = "" if large_gain == 1.0 else f"-gain{large_gain:g}"
            target = workdir / f"hf-{generation}-{dtype}{suffix}"
            torch_dtype = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[dtype]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype)
                model.save_pretrained(target)
            for name in NON_WEIGHT_FILES:
                if (source / name).exists():
                    shutil.copy(source / name, target / name)
            made[key] = target
        return made[key]

    return make


@pytest.fixture(scope="session")
def converted(workdir, numpy_checkpoint):
    """make(quant, mmproj_type, generation) -> ConversionResult of the numpy-written tiny checkpoint.

    No torch: the pair is the same, byte for byte, as the one converted from hf_checkpoint's re-save
    of this checkpoint (tests/test_convert_cli.py checks that in the reference lane).
    """
    made: dict[tuple, object] = {}

    def make(quant: str = "F16", mmproj_type: str = "F16", generation: str = "SmolVLM", large_gain: float = 1.0):
        key = (quant, mmproj_type, generation, large_gain)
        if key not in made:
            suffix = "" if large_gain == 1.0 else f"-gain{large_gain:g}"
            outdir = workdir / f"gguf-{generation}-{quant}-{mmproj_type}{suffix}"
            source = numpy_checkpoint(generation, SOURCE_DTYPES[generation], large_gain)
            made[key] = convert_checkpoint(source, outdir, quant, mmproj_type, name=f"tiny-{generation}")
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_pair(converted):
    """A converted pair for runtime tests: (model path, mmproj path)."""
    result = converted("F16", "F16")
    return result.model, result.mmproj


@pytest.fixture(scope="session")
def seeded_pair(workdir):
    """make(seed) -> (model path, mmproj path) of a tiny SmolVLM written with this seed.

    numpy_checkpoint seeds by creation order, so the shared pair's weights depend on which test ran
    first; a test that needs particular random weights names their seed here instead.
    """
    made: dict[int, tuple[Path, Path]] = {}

    def make(seed: int) -> tuple[Path, Path]:
        if seed not in made:
            source = write_random_checkpoint(workdir / f"np-seed{seed}", "tiny", "SmolVLM", "BF16", seed=seed)
            result = convert_checkpoint(source, workdir / f"gguf-seed{seed}", "F16", "F16", name=f"tiny-seed{seed}")
            made[seed] = (result.model, result.mmproj)
        return made[seed]

    return make


@pytest.fixture(scope="session")
def images(workdir) -> dict[str, Path]:
    """Real image files of several shapes and formats."""
    folder = workdir / "images"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    made = {
        "square": (photo_like(80, 80, 1), "square.png"),
        "wide": (photo_like(150, 60, 2), "wide.png"),
        "tall": (photo_like(50, 110, 3), "tall.webp"),
        "photo": (photo_like(200, 150, 4), "photo.jpg"),
        "noise": (Image.fromarray((rng.random((70, 90, 3)) * 255).astype(np.uint8)), "noise.bmp"),
    }
    paths = {}
    for key, (image, name) in made.items():
        path = folder / name
        image.save(path)
        paths[key] = path
    return paths
