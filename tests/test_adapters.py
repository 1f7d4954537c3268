"""Adapters in the fast lane (numpy-written PEFT folders, no torch): the merge arithmetic, the runtime LoRA
against the merged pair, the CLI's outputs, and bad input refused in one line with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import SOURCE_DTYPES
from typer.testing import CliRunner

from smolcli.cli.app import app
from smolcli.convert import convert_checkpoint
from smolcli.convert.text_model import rotary_interleave
from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.synthetic.random_adapter import PREFIX, write_adapter, write_safetensors

from cli_checks import one_line_error

runner = CliRunner()
PROMPT = "<|im_start|>User: Say something.<end_of_utterance>\nAssistant:"
Q = "model.text_model.layers.0.self_attn.q_proj"
K = "model.text_model.layers.1.self_attn.k_proj"
DOWN = "model.text_model.layers.1.mlp.down_proj"
VISION_Q = "model.vision_model.encoder.layers.0.self_attn.q_proj"
CONNECTOR = "model.connector.modality_projection.proj"


@pytest.fixture(scope="module")
def base(numpy_checkpoint) -> Path:
    return numpy_checkpoint("SmolVLM", SOURCE_DTYPES["SmolVLM"])


@pytest.fixture(scope="module")
def lora_dir(base, tmp_path_factory) -> Path:
    return write_adapter(tmp_path_factory.mktemp("ad") / "text-lora", base, [Q, K, DOWN], rank=3, alpha=6.0)


def f32(entry) -> np.ndarray:
    from smolcli.convert.safetensors_file import to_float32

    return to_float32(np.asarray(entry.load()), entry.dtype)


def gguf_tensor(path: Path, name: str) -> np.ndarray:
    reader = gguf.GGUFReader(path)
    (tensor,) = [t for t in reader.tensors if t.name == name]
    return np.array(tensor.data, dtype=np.float32).reshape(tuple(reversed([int(n) for n in tensor.shape])))


def adapter_parts(folder: Path, module: str) -> tuple[np.ndarray, np.ndarray]:
    from smolcli.convert.safetensors_file import read_header

    entries = read_header(folder / "adapter_model.safetensors")
    return f32(entries[f"{PREFIX}{module}.lora_A.weight"]), f32(entries[f"{PREFIX}{module}.lora_B.weight"])


def test_merge_is_w_plus_scaled_b_a_with_q_rows_reordered(base, lora_dir, tmp_path):
    from smolcli.convert.checkpoint import open_checkpoint

    checkpoint = open_checkpoint(base)
    result = convert_checkpoint(base, tmp_path, "F32", "F32", name="m", adapter=lora_dir, adapter_scale=0.5)
    assert result.model.name == "m-text-lora-x0.5-F32.gguf"
    heads = checkpoint.text["num_attention_heads"]
    for module, name, permute in ((DOWN, "blk.1.ffn_down.weight", False), (Q, "blk.0.attn_q.weight", True)):
        a, b = adapter_parts(lora_dir, module)
        expected = f32(checkpoint.tensors[module + ".weight"]) + np.float32(0.5 * 6.0 / 3) * (b @ a)
        if permute:
            expected = rotary_interleave(expected, heads)
        np.testing.assert_allclose(gguf_tensor(result.model, name), expected, rtol=0, atol=1e-5)
    untouched = f32(checkpoint.tensors["model.text_model.layers.0.mlp.down_proj.weight"])
    np.testing.assert_array_equal(gguf_tensor(result.model, "blk.0.ffn_down.weight"), untouched)


def test_dora_rescales_each_row_and_modules_to_save_replace(base, tmp_path):
    from smolcli.convert.checkpoint import open_checkpoint
    from smolcli.convert.safetensors_file import read_header

    norm = "model.text_model.norm.weight"
    folder = write_adapter(tmp_path / "dora", base, [DOWN], rank=2, alpha=2.0, dora=True, saved=[norm])
    result = convert_checkpoint(base, tmp_path / "out", "F32", "F32", name="m", adapter=folder)
    entries = read_header(folder / "adapter_model.safetensors")
    a, b = adapter_parts(folder, DOWN)
    magnitude = f32(entries[f"{PREFIX}{DOWN}.lora_magnitude_vector"])
    combined = f32(open_checkpoint(base).tensors[DOWN + ".weight"]) + b @ a
    expected = magnitude[:, None] / np.linalg.norm(combined, axis=1, keepdims=True) * combined
    np.testing.assert_allclose(gguf_tensor(result.model, "blk.1.ffn_down.weight"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(gguf_tensor(result.model, "output_norm.weight"), f32(entries[PREFIX + norm]))


def logits(model: Path, mmproj: Path, lora=()) -> np.ndarray:
    with Engine(resolve_model_files(model, mmproj), EngineOptions(threads=2, lora=tuple(lora))) as engine:
        context = engine.new_context(256)
        prompt = engine.tokenize(PROMPT, [])
        engine.evaluate(prompt, context)
        return context.last_logits()


def test_runtime_lora_equals_the_merged_pair_and_scale_zero_the_base(base, lora_dir, converted, tmp_path):
    pair = converted("F32", "F32")
    merged = convert_checkpoint(base, tmp_path / "merged", "F32", "F32", name="m", adapter=lora_dir)
    result = runner.invoke(
        app, ["convert-adapter", str(lora_dir), "--base", str(base), "-o", str(tmp_path), "--type", "F32"]
    )
    assert result.exit_code == 0, result.output
    adapter = Path(result.stdout.strip())
    assert result.stdout == f"{adapter}\n" and adapter.name == "text-lora-LoRA-F32.gguf"

    plain = logits(pair.model, pair.mmproj)
    runtime = logits(pair.model, pair.mmproj, [(str(adapter), 1.0)])
    assert np.abs(runtime - logits(merged.model, merged.mmproj)).max() < 2e-3
    assert np.abs(runtime - plain).max() > 0.1  # the adapter does change the answer
    assert np.array_equal(logits(pair.model, pair.mmproj, [(str(adapter), 0.0)]), plain)
    # two halves stack to the whole
    halves = logits(pair.model, pair.mmproj, [(str(adapter), 0.5), (str(adapter), 0.5)])
    assert np.abs(halves - runtime).max() < 1e-3


def test_ask_and_info_take_the_adapter(base, lora_dir, converted, tmp_path):
    pair = converted("F16", "F16")
    written = runner.invoke(app, ["convert-adapter", str(lora_dir), "--base", str(base), "-o", str(tmp_path)])
    adapter = written.stdout.strip()
    answer = runner.invoke(app, ["ask", "-m", str(pair.model), "--lora", f"{adapter}:0.8", "-n", "4", "--json", "Hi"])
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.stdout)["usage"]["completion_tokens"] == 4
    info = runner.invoke(app, ["info", adapter, "--json"])
    described = json.loads(info.stdout)["adapter"]
    assert (described["rank"], described["alpha"], described["adapter_type"]) == (3, 6.0, "lora")
    assert described["modules"] == "down_proj, k_proj, q_proj" and described["architecture"] == "llama"
    one_line_error(runner.invoke(app, ["ask", "-m", adapter, "Hi"]), "is a LoRA adapter", "--lora")
    one_line_error(
        runner.invoke(app, ["ask", "-m", str(pair.model), "--lora", str(pair.model), "Hi"]), "not a LoRA adapter"
    )


def test_vision_adapter_gets_the_merged_mmproj_beside_it(base, tmp_path):
    import smolcli

    folder = write_adapter(tmp_path / "seeing", base, [Q, VISION_Q, CONNECTOR])
    out = tmp_path / "out"
    result = runner.invoke(app, ["convert-adapter", str(folder), "--base", str(base), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / "seeing-LoRA-F16.gguf"), str(out / "mmproj-seeing-F16.gguf")]
    model_path = convert_checkpoint(base, tmp_path / "base", "F16", "F16", name="b").model
    with smolcli.load(model_path, lora=[out / "seeing-LoRA-F16.gguf"], threads=2) as model:
        assert model.files.mmproj.path == out / "mmproj-seeing-F16.gguf"
    twice = [str(out / "seeing-LoRA-F16.gguf")] * 2
    with pytest.raises(smolcli.BadInput, match="mtmd runs one mmproj"):
        smolcli.load(model_path, lora=twice)


# --- bad input: one line, exit 1, nothing written ----------------------------------------------------------


def assert_refused(args: list[str], outdir: Path, *words: str) -> None:
    one_line_error(runner.invoke(app, [*args, "-o", str(outdir)]), *words, after_progress=True)
    assert not outdir.exists() or list(outdir.iterdir()) == [], "a refused conversion left files behind"


def both_commands(base: Path, folder: Path) -> list[list[str]]:
    return [["convert", str(base), "--adapter", str(folder)], ["convert-adapter", str(folder), "--base", str(base)]]


def edited_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "adapter_config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def spoilable(lora_dir, tmp_path) -> Path:
    target = tmp_path / "adapter"
    shutil.copytree(lora_dir, target)
    return target


def test_adapter_for_another_base_names_the_tensor(base, spoilable, tmp_path):
    from smolcli.convert.safetensors_file import read_header

    weights = spoilable / "adapter_model.safetensors"
    tensors = {key: f32(entry).copy() for key, entry in read_header(weights).items()}
    name = f"{PREFIX}{DOWN}.lora_A.weight"
    tensors[name] = np.zeros((3, 100), np.float32)  # a base whose down_proj takes 100 inputs
    write_safetensors(weights, tensors)
    for index, args in enumerate(both_commands(base, spoilable)):
        assert_refused(args, tmp_path / f"out{index}", name, "[3, 100]", "another base")


@pytest.mark.parametrize(
    "changes,words",
    [
        ({"r": None}, ["missing field 'r'"]),
        ({"lora_alpha": None}, ["missing field 'lora_alpha'"]),
        ({"hira_config": {"r": 2}}, ["unknown field 'hira_config'"]),
        ({"peft_type": "IA3"}, ["peft_type 'IA3'"]),
        ({"fan_in_fan_out": True}, ["fan_in_fan_out=True"]),
        ({"target_modules": ["q_proj", "qkv_proj"]}, ["target module 'qkv_proj'", "known: "]),
        ({"r": 8}, ["rank 3", "r=8"]),
    ],
)
def test_bad_config_fields(base, spoilable, tmp_path, changes, words):
    edited_config(spoilable, **changes)
    for index, args in enumerate(both_commands(base, spoilable)):
        assert_refused(args, tmp_path / f"out{index}", *words)


def test_pickled_weights_are_refused_unread(base, spoilable, tmp_path):
    (spoilable / "adapter_model.safetensors").rename(spoilable / "adapter_model.bin")
    (spoilable / "adapter_model.bin").write_bytes(b"\x80\x04 would run code if unpickled")
    for index, args in enumerate(both_commands(base, spoilable)):
        assert_refused(args, tmp_path / f"out{index}", "adapter_model.bin", "never unpickles")


def test_truncated_weights(base, spoilable, tmp_path):
    weights = spoilable / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    for index, args in enumerate(both_commands(base, spoilable)):
        assert_refused(args, tmp_path / f"out{index}", "truncated", "adapter_model.safetensors")


def test_dora_and_modules_to_save_cannot_run_as_llama_cpp_lora(base, tmp_path):
    dora = write_adapter(tmp_path / "dora", base, [DOWN], dora=True)
    assert_refused(both_commands(base, dora)[1], tmp_path / "o1", "DoRA", f"smolcli convert BASE --adapter {dora}")
    saved = write_adapter(tmp_path / "saved", base, [DOWN], saved=["lm_head.weight"])
    assert_refused(both_commands(base, saved)[1], tmp_path / "o2", "modules_to_save", "lm_head.weight", "--adapter")


def test_lora_option_errors(converted, tmp_path):
    pair = converted("F16", "F16")
    one_line_error(
        runner.invoke(app, ["ask", "-m", str(pair.model), "--lora", str(tmp_path / "none.gguf:0.5"), "Hi"]),
        "--lora",
        "none.gguf: no such file",
    )
