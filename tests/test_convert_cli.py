"""`smolcli convert` as users run it: clean stdout, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SOURCE_DTYPES
from typer.testing import CliRunner

from smolcli.cli.app import app

runner = CliRunner()


def convert(*args: str):
    return runner.invoke(app, ["convert", *map(str, args)])


def assert_clean_failure(result, outdir: Path, *needles: str):
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: "), result.stderr
    assert result.stderr.count("error") == 1, result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in message, message
    if outdir.exists():
        assert list(outdir.iterdir()) == [], "a failed conversion left files behind"


@pytest.fixture
def checkpoint_copy(tmp_path, numpy_checkpoint):
    """A fresh copy of the tiny numpy-written checkpoint that a test may damage."""
    target = tmp_path / "SmolVLM-tiny"
    shutil.copytree(numpy_checkpoint("SmolVLM"), target)
    return target


@pytest.mark.reference
@pytest.mark.parametrize("generation", ["SmolVLM", "SmolVLM2"])
def test_the_transformers_resaved_checkpoint_converts_to_the_same_files(generation, hf_checkpoint, converted, tmp_path):
    """Why the fast lane may convert the numpy-written checkpoint: its save_pretrained copy gives the same bytes."""
    ours = converted("F16", "F16", generation)
    result = convert(
        hf_checkpoint(generation, SOURCE_DTYPES[generation]),
        "-o",
        tmp_path,
        "-q",
        "F16",
        "--name",
        f"tiny-{generation}",
    )
    assert result.exit_code == 0, result.output
    model, mmproj = map(Path, result.stdout.splitlines())
    assert (model.name, mmproj.name) == (ours.model.name, ours.mmproj.name)
    assert model.read_bytes() == ours.model.read_bytes()
    assert mmproj.read_bytes() == ours.mmproj.read_bytes()


def test_prints_exactly_the_two_paths(checkpoint_copy, tmp_path):
    outdir = tmp_path / "out"
    result = convert(checkpoint_copy, "--outdir", outdir, "--quant", "q8_0", "--mmproj-type", "F16")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        str(outdir / "SmolVLM-tiny-Q8_0.gguf"),
        str(outdir / "mmproj-SmolVLM-tiny-F16.gguf"),
    ]
    assert "model tensors:" in result.stderr  # the summary goes to stderr
    assert sorted(p.name for p in outdir.iterdir()) == ["SmolVLM-tiny-Q8_0.gguf", "mmproj-SmolVLM-tiny-F16.gguf"]


def test_default_quant_and_name(checkpoint_copy, tmp_path):
    result = convert(checkpoint_copy, "-o", tmp_path / "o", "--name", "mini")
    assert result.exit_code == 0, result.output
    assert [Path(p).name for p in result.stdout.splitlines()] == ["mini-Q4_K_M.gguf", "mmproj-mini-F16.gguf"]


def test_entry_point_and_module_run(checkpoint_copy, tmp_path):
    for command in ([str(Path(sys.executable).with_name("smolcli"))], [sys.executable, "-m", "smolcli"]):
        outdir = tmp_path / command[-1].replace("/", "_")
        done = subprocess.run(
            [*command, "convert", str(checkpoint_copy), "-o", str(outdir), "-q", "F16"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == 2 and all(Path(p).is_file() for p in done.stdout.splitlines())


def test_unknown_architecture(checkpoint_copy, tmp_path):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["architectures"] = ["LlavaForConditionalGeneration"]
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    assert_clean_failure(
        convert(checkpoint_copy, "-o", tmp_path / "o"),
        tmp_path / "o",
        "LlavaForConditionalGeneration",
        "Idefics3ForConditionalGeneration",
        "SmolVLMForConditionalGeneration",
    )


# without any weights file the converter cannot know its name (one file or shards): it names the pattern
@pytest.mark.parametrize(
    "missing,named",
    [
        ("config.json", "config.json"),
        ("tokenizer.json", "tokenizer.json"),
        ("model.safetensors", "no *.safetensors weights"),
    ],
)
def test_missing_file(checkpoint_copy, tmp_path, missing, named):
    (checkpoint_copy / missing).unlink()
    assert_clean_failure(convert(checkpoint_copy, "-o", tmp_path / "o"), tmp_path / "o", str(checkpoint_copy), named)


def test_truncated_safetensors(checkpoint_copy, tmp_path):
    weights = checkpoint_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    assert_clean_failure(convert(checkpoint_copy, "-o", tmp_path / "o"), tmp_path / "o", "truncated")


def test_corrupt_safetensors_header(checkpoint_copy, tmp_path):
    weights = checkpoint_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"#garbage"
    weights.write_bytes(bytes(data))
    assert_clean_failure(convert(checkpoint_copy, "-o", tmp_path / "o"), tmp_path / "o", "corrupt safetensors header")


def test_shapes_that_disagree_with_config(checkpoint_copy, tmp_path):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["text_config"]["intermediate_size"] += 64
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    assert_clean_failure(convert(checkpoint_copy, "-o", tmp_path / "o"), tmp_path / "o", "config.json", "shape")


def test_pickle_only_checkpoint_is_refused(checkpoint_copy, tmp_path):
    (checkpoint_copy / "model.safetensors").rename(checkpoint_copy / "pytorch_model.bin")
    assert_clean_failure(
        convert(checkpoint_copy, "-o", tmp_path / "o"), tmp_path / "o", "pytorch_model.bin", "never unpickles"
    )


def test_unknown_quant_type(checkpoint_copy, tmp_path):
    assert_clean_failure(convert(checkpoint_copy, "-o", tmp_path / "o", "-q", "Q3_X"), tmp_path / "o", "Q3_X", "Q4_K_M")
    assert_clean_failure(
        convert(checkpoint_copy, "-o", tmp_path / "o", "--mmproj-type", "Q4_0"), tmp_path / "o", "mmproj type"
    )


def test_missing_shard(checkpoint_copy, tmp_path):
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (checkpoint_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_clean_failure(
        convert(checkpoint_copy, "-o", tmp_path / "o"), tmp_path / "o", "model-00002-of-00002.safetensors"
    )


def test_source_is_not_a_folder(tmp_path):
    assert_clean_failure(convert(tmp_path / "nowhere", "-o", tmp_path / "o"), tmp_path / "o", "no such folder")


def test_interrupted_write_leaves_nothing(checkpoint_copy, tmp_path, monkeypatch):
    from smolcli.convert import text_model

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(text_model, "add_metadata", fail)
    result = convert(checkpoint_copy, "-o", tmp_path / "o")
    assert result.exit_code == 130
    assert list((tmp_path / "o").iterdir()) == []
