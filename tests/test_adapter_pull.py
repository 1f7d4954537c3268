"""`smolcli pull` of a PEFT adapter repo, against the fake Hub on 127.0.0.1: the adapter and the base its
adapter_config.json names are fetched, merged and stored as one pair."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smolcli.cli.app import app
from smolcli.convert import convert_checkpoint
from smolcli.store.model_store import ModelStore
from smolcli.synthetic.random_adapter import write_adapter
from smolcli.synthetic.random_checkpoint import write_random_checkpoint

from cli_checks import one_line_error
from fake_hub import FakeHub, point_huggingface_hub_at

BASE = "HuggingFaceTB/SmolVLM-256M-Instruct"
ADAPTER = "someone/tiny-finetune"
DOWN = "model.text_model.layers.1.mlp.down_proj"
VISION_Q = "model.vision_model.encoder.layers.0.self_attn.q_proj"


def run(*args: str):
    return CliRunner().invoke(app, list(map(str, args)))


@pytest.fixture(scope="module")
def content(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapter-hub")
    base = write_random_checkpoint(root / "base", "tiny", "SmolVLM", "BF16")
    adapter = write_adapter(root / "tiny-finetune", base, [DOWN, VISION_Q], base_model_name_or_path=BASE)
    return base, adapter


@pytest.fixture
def hub(content, tmp_path, monkeypatch):
    server = FakeHub()
    server.add_repo(BASE, content[0])
    server.add_repo(ADAPTER, content[1])
    server.start()
    monkeypatch.setenv("SMOLCLI_HOME", str(tmp_path / "home"))
    point_huggingface_hub_at(monkeypatch, server, tmp_path / "hf")
    yield server
    server.stop()


def test_pull_of_an_adapter_repo_merges_it_into_its_base(hub, content, tmp_path):
    result = run("pull", ADAPTER, "-q", "F16")
    assert result.exit_code == 0, result.output
    model, mmproj = map(Path, result.stdout.splitlines())
    assert model.name == "SmolVLM-256M-Instruct-tiny-finetune-F16.gguf"
    assert mmproj.name == "mmproj-SmolVLM-256M-Instruct-tiny-finetune-F16.gguf"
    # the same files as merging the same folders locally
    local = convert_checkpoint(
        content[0], tmp_path / "local", "F16", "F16", name="SmolVLM-256M-Instruct", adapter=content[1],
        adapter_name="tiny-finetune",
    )  # fmt: skip
    for pulled, made in ((model, local.model), (mmproj, local.mmproj)):
        assert hashlib.sha256(pulled.read_bytes()).digest() == hashlib.sha256(made.read_bytes()).digest()
    (entry,) = ModelStore().entries()
    assert (entry.repo_id, entry.source_repo, entry.quant) == (ADAPTER, BASE, "F16")
    assert {r.filename for r in hub.file_requests() if r.method == "GET"} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "model.safetensors",
    }
    answer = run("ask", "-m", ADAPTER, "--offline", "-n", "2", "Hi")
    assert answer.exit_code == 0, answer.output


def test_an_adapter_repo_naming_a_local_base_or_only_pickles(hub, content):
    config = json.loads((content[1] / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/home/me/SmolVLM-256M-Instruct"
    hub.add_repo("someone/local-base", content[1]).files["adapter_config.json"] = json.dumps(config).encode()
    one_line_error(run("pull", "someone/local-base"), "not a Hub repo id", "--adapter", after_progress=True)

    pickled = hub.add_repo(
        "someone/pickled", files={"adapter_config.json": (content[1] / "adapter_config.json").read_bytes()}
    )
    pickled.files["adapter_model.bin"] = b"\x80\x04 never unpickled"
    one_line_error(run("pull", "someone/pickled"), "never unpickles", after_progress=True)
    assert ModelStore().entries() == []
    assert not hub.gets("adapter_model.bin")
