"""Shared fixtures: tiny random SmolVLM checkpoints, their converted GGUF pairs, and test images.

Everything is built once per session in a temporary folder; nothing is downloaded.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smolcli.convert import convert_checkpoint
from smolcli.synthetic.random_checkpoint import write_random_checkpoint
from smolcli.synthetic.images import photo_like

# the releases ship bf16; f16 covers the other half-precision layout
SOURCE_DTYPES = {"SmolVLM": "BF16", "SmolVLM2": "F16"}
NON_WEIGHT_FILES = (
    "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
    "chat_template.json", "chat_template.jinja",
)


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

    def make(generation: str = "SmolVLM", dtype: str = "BF16") -> Path:
        key = (generation, dtype)
        if key not in made:
            made[key] = write_random_checkpoint(workdir / f"np-{generation}-{dtype}", "tiny", generation, dtype, seed=len(made))
        return made[key]

    return make


@pytest.fixture(scope="session")
def hf_checkpoint(workdir, numpy_checkpoint):
    """make(generation, dtype) -> the same random model re-saved by transformers' save_pretrained."""
    made: dict[tuple, Path] = {}

    def make(generation: str = "SmolVLM", dtype: str = "BF16") -> Path:
        key = (generation, dtype)
        if key not in made:
            import torch
            from transformers import AutoModelForImageTextToText

            source = numpy_checkpoint(generation, dtype)
            target = workdir / f"hf-{generation}-{dtype}"
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
def converted(workdir, hf_checkpoint):
    """make(quant, mmproj_type, generation) -> ConversionResult of a transformers-saved tiny checkpoint."""
    made: dict[tuple, object] = {}

    def make(quant: str = "F16", mmproj_type: str = "F16", generation: str = "SmolVLM"):
        key = (quant, mmproj_type, generation)
        if key not in made:
            outdir = workdir / f"gguf-{generation}-{quant}-{mmproj_type}"
            source = hf_checkpoint(generation, SOURCE_DTYPES[generation])
            made[key] = convert_checkpoint(source, outdir, quant, mmproj_type, name=f"tiny-{generation}")
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_pair(converted):
    """A converted pair for runtime tests: (model path, mmproj path)."""
    result = converted("F16", "F16")
    return result.model, result.mmproj


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
