"""`smolcli info` on real converted files, hand-written GGUFs and broken inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

from smolcli.cli.app import app
from smolcli.convert import convert_checkpoint
from smolcli.models.smolvlm_shapes import SHAPES
from smolcli.synthetic.random_checkpoint import write_random_checkpoint

from cli_checks import one_line_error

TINY = SHAPES["tiny"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A converted tiny pair alone in its folder: (model, mmproj)."""
    root = tmp_path_factory.mktemp("info")
    checkpoint = write_random_checkpoint(root / "checkpoint", "tiny", "SmolVLM", "BF16")
    result = convert_checkpoint(checkpoint, root / "pair", "Q8_0", "F16", name="tiny")
    return result.model, result.mmproj


def run(*args: str):
    return CliRunner().invoke(app, ["info", *map(str, args)])


def run_json(*args) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def write_gguf(path: Path, architecture: str, keys: dict, tensor_shape=(4, 8)) -> Path:
    """A small valid GGUF with chosen metadata and one F32 tensor."""
    writer = gguf.GGUFWriter(str(path), architecture)
    for key, value in keys.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_uint32(key, value)
    writer.add_tensor("weight", np.ones(tensor_shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def parameters_of(path: Path) -> int:
    return sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)


def test_model_report_has_the_checkpoints_dimensions_and_finds_its_mmproj(pair):
    model, mmproj = pair
    report = run_json(model)
    described = report["model"]
    assert described["architecture"] == "llama"
    assert described["embedding_length"] == TINY["text"]["hidden_size"]
    assert described["layers"] == TINY["text"]["num_hidden_layers"]
    assert described["heads"] == TINY["text"]["num_attention_heads"]
    assert described["kv_heads"] == TINY["text"]["num_key_value_heads"]
    assert described["context_length"] == TINY["text"]["max_position_embeddings"]
    assert described["vocab_size"] == TINY["text"]["vocab_size"]
    assert described["chat_template"] is True
    assert described["parameters"] == parameters_of(model)
    assert described["size"] == model.stat().st_size
    assert set(described["tensor_types"]) == {"Q8_0", "F32"}
    assert sum(described["tensor_types"].values()) == len(gguf.GGUFReader(model).tensors)
    assert report["mmproj"]["path"] == str(mmproj)
    assert report["fits"] is True and report["fit_problem"] is None


def test_mmproj_report_has_the_vision_settings(pair):
    _, mmproj = pair
    report = run_json(mmproj)
    assert report["model"] is None and report["fits"] is None
    described = report["mmproj"]
    assert described["projector_type"] == "idefics3"
    assert described["image_size"] == TINY["vision"]["image_size"]
    assert described["patch_size"] == TINY["vision"]["patch_size"]
    assert described["scale_factor"] == TINY["scale_factor"]
    assert described["projection_dim"] == TINY["text"]["hidden_size"]
    assert described["tensor_types"]["F16"] > 0


def test_a_folder_gives_the_same_report_as_its_model_file(pair):
    model, _ = pair
    assert run_json(model.parent) == run_json(model)


def test_readable_report(pair):
    model, _ = pair
    result = run(model)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"model: {model} (")
    assert "\nmmproj: " in out
    assert f"  embedding length  {TINY['text']['hidden_size']}\n" in out
    assert "  chat template     yes\n" in out
    assert "  projector type    idefics3\n" in out
    assert "tensor types      Q8_0 x" in out
    assert out.rstrip().endswith("pair: fits (the mmproj projects to the model's embedding length)")


def test_a_model_alone_says_it_has_no_mmproj(pair, tmp_path):
    model, _ = pair
    alone = Path(shutil.copy(model, tmp_path / model.name))
    report = run_json(alone)
    assert report["model"]["embedding_length"] == TINY["text"]["hidden_size"] and report["mmproj"] is None
    assert "pair: no mmproj-*.gguf beside the model" in run(alone).stdout


def test_an_mmproj_for_another_width_does_not_fit(pair, tmp_path):
    model, _ = pair
    wrong = write_gguf(
        tmp_path / "mmproj-other-F32.gguf",
        "clip",
        {"general.type": "mmproj", "clip.projector_type": "idefics3", "clip.vision.projection_dim": 960},
    )
    report = run_json(model, "--mmproj", wrong)
    assert report["fits"] is False
    assert "projects to 960" in report["fit_problem"]
    result = run(model, "--mmproj", wrong)
    assert result.exit_code == 0
    assert "pair: does NOT fit: it projects to 960" in result.stdout


def test_vocab_size_and_template_of_a_gguf_from_another_converter(tmp_path):
    # no llama.vocab_size key and no chat template: the size comes from the token list
    path = write_gguf(
        tmp_path / "other.gguf",
        "llama",
        {
            "llama.embedding_length": 8,
            "llama.block_count": 1,
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.tokens": ["a", "b", "c", "d", "e"],
        },
    )
    described = run_json(path)["model"]
    assert described["vocab_size"] == 5
    assert described["chat_template"] is False
    assert described["parameters"] == 32
    assert "  chat template     no\n" in run(path).stdout


# --- bad inputs: one line on stderr, exit 1 --------------------------------------------------


def test_missing_file(tmp_path):
    one_line_error(run(tmp_path / "nope.gguf"), "nope.gguf", "no such file or folder")


def test_not_a_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("hello, not a model\n")
    one_line_error(run(path), "not a GGUF file")


def test_truncated_gguf(pair, tmp_path):
    model, _ = pair
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    one_line_error(run(cut), "cut.gguf", "truncated")


def test_folder_without_gguf(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    one_line_error(run(tmp_path), "no .gguf files")


def test_folder_with_two_models(pair, tmp_path):
    model, _ = pair
    shutil.copy(model, tmp_path / "a-Q8_0.gguf")
    shutil.copy(model, tmp_path / "b-Q8_0.gguf")
    one_line_error(run(tmp_path), "several language models", "a-Q8_0.gguf", "b-Q8_0.gguf")


def test_mmproj_option_given_a_language_model(pair):
    model, _ = pair
    one_line_error(run(model, "--mmproj", model), "is a language model, not an mmproj")


def test_mmproj_given_as_the_model_with_another_mmproj(pair):
    _, mmproj = pair
    one_line_error(run(mmproj, "--mmproj", mmproj), "is an mmproj file")
