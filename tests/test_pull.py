"""`smolcli pull` and models by name, against a fake Hugging Face Hub on 127.0.0.1 (tests/fake_hub.py).

The fake hub serves tiny random checkpoints the way the Hub does, records every request
and can drop a connection mid-file or go down. huggingface_hub does the downloading, as
it does for users; no test reaches the internet.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smolcli.cli.app import app
from smolcli.convert import convert_checkpoint
from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.store.model_store import ModelStore
from smolcli.synthetic.random_checkpoint import write_random_checkpoint

import cli_checks
from fake_hub import FakeHub, Faults, point_huggingface_hub_at

REPO = "HuggingFaceTB/SmolVLM-256M-Instruct"
PREBUILT_REPO = "ggml-org/SmolVLM-256M-Instruct-GGUF"
SMALL_FILES = (
    "chat_template.json",
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)
SMOLCLI = Path(sys.executable).parent / "smolcli"

# pulls print progress on stderr before any error
one_line_error = functools.partial(cli_checks.one_line_error, after_progress=True)


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(map(str, args)), env=env)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_state(store: ModelStore) -> dict[str, str]:
    """Every folder and file under the store root (files by content), but the lock file a failed pull may leave."""
    if not store.root.exists():
        return {}
    state = {}
    for path in sorted(store.root.rglob("*")):
        name = path.relative_to(store.root).as_posix()
        if name != ".lock":
            state[name] = sha256(path) if path.is_file() else "folder"
    return state


def assert_store_untouched(store: ModelStore, before: dict[str, str] | None = None) -> None:
    """The store holds what it held before (default: nothing): same index, same pairs, no staging folder."""
    after = store_state(store)
    before = {} if before is None else before
    assert after == before, (
        f"added: {sorted(after.keys() - before.keys())}, removed: {sorted(before.keys() - after.keys())}, "
        f"changed: {sorted(k for k in before.keys() & after.keys() if before[k] != after[k])}"
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub-content")
    return {
        "SmolVLM": write_random_checkpoint(root / "SmolVLM", "tiny", "SmolVLM", "BF16"),
        "SmolVLM2": write_random_checkpoint(root / "SmolVLM2", "tiny", "SmolVLM2", "F16", seed=1),
    }


@pytest.fixture
def hub(checkpoints, tmp_path, monkeypatch):
    server = FakeHub()
    server.add_repo(REPO, checkpoints["SmolVLM"])
    server.start()
    monkeypatch.setenv("SMOLCLI_HOME", str(tmp_path / "home"))
    point_huggingface_hub_at(monkeypatch, server, tmp_path / "hf")
    yield server
    server.stop()


@pytest.fixture
def store(hub) -> ModelStore:
    return ModelStore()


def test_pull_downloads_converts_and_indexes(hub, store):
    result = run("pull", "smolvlm-256m")
    assert result.exit_code == 0, result.output
    model, mmproj = map(Path, result.stdout.splitlines())
    assert (model.name, mmproj.name) == ("SmolVLM-256M-Instruct-Q8_0.gguf", "mmproj-SmolVLM-256M-Instruct-F16.gguf")
    assert "downloading 7 files" in result.stderr and "stored smolvlm-256m" in result.stderr
    resolve_model_files(model, mmproj)  # a pair that loads and fits

    (entry,) = store.entries()
    assert (entry.name, entry.repo_id, entry.source, entry.source_repo) == ("smolvlm-256m", REPO, "converted", REPO)
    assert (entry.revision, entry.commit) == ("main", hub.repos[REPO.lower()].commit)
    assert (entry.quant, entry.mmproj_type, entry.family) == ("Q8_0", "F16", "smolvlm")
    assert (store.model_path(entry), store.mmproj_path(entry)) == (model, mmproj)
    assert (entry.model.size, entry.model.sha256) == (model.stat().st_size, sha256(model))
    assert (entry.mmproj.size, entry.mmproj.sha256) == (mmproj.stat().st_size, sha256(mmproj))
    # only the files conversion reads, each fetched once
    fetched = sorted(r.filename for r in hub.file_requests() if r.method == "GET")
    assert fetched == sorted([*SMALL_FILES, "model.safetensors"])

    # stored: a second pull asks nothing of the Hub, and info finds the model by name, offline
    asked = len(hub.requests)
    again = run("pull", "smolvlm-256m")
    assert again.exit_code == 0 and again.stdout == result.stdout and "already in the model store" in again.stderr
    report = json.loads(run("info", "smolvlm-256m", "--offline", "--json").stdout)
    assert report["model"]["path"] == str(model) and report["fits"] is True
    assert len(hub.requests) == asked

    # rm empties the store; the checkpoint stays in the Hugging Face cache, so pulling again downloads nothing
    removed = run("rm", "smolvlm-256m")
    assert removed.exit_code == 0 and store.entries() == [] and not model.exists()
    assert run("pull", "smolvlm-256m").exit_code == 0
    assert sorted(r.filename for r in hub.file_requests() if r.method == "GET") == fetched


def test_a_repo_id_outside_the_registry(hub, store, checkpoints):
    repo = hub.add_repo("someone/tiny-SmolVLM2", checkpoints["SmolVLM2"])
    repo.files.update({"onnx/model.onnx": b"onnx", "pytorch_model.bin": b"pickle", "README.md": b"# card"})
    result = run("pull", "someone/tiny-SmolVLM2")
    assert result.exit_code == 0, result.output
    (entry,) = store.entries()
    assert (entry.name, entry.repo_id, entry.quant, entry.mmproj_type) == (
        "someone/tiny-SmolVLM2",
        "someone/tiny-SmolVLM2",
        "Q4_K_M",
        "F16",
    )
    fetched = {r.filename for r in hub.file_requests() if r.method == "GET"}
    assert fetched == {*SMALL_FILES, "chat_template.jinja", "model.safetensors"} - {"chat_template.json"}
    listed = json.loads(run("models", "--json").stdout)["models"]
    assert listed[-1]["repo_id"] == "someone/tiny-SmolVLM2" and listed[-1]["local"][0]["quant"] == "Q4_K_M"


def test_an_unsupported_architecture_is_named_before_any_weights(hub, store, checkpoints):
    config = json.loads((checkpoints["SmolVLM"] / "config.json").read_text())
    config["architectures"] = ["LlavaForConditionalGeneration"]
    hub.add_repo("someone/llava-tiny", checkpoints["SmolVLM"], files={}).files["config.json"] = json.dumps(
        config
    ).encode()
    result = run("pull", "someone/llava-tiny")
    one_line_error(
        result,
        "someone/llava-tiny",
        "unsupported architecture 'LlavaForConditionalGeneration'",
        "Idefics3ForConditionalGeneration",
    )
    assert hub.gets("model.safetensors") == [] and hub.gets("config.json")
    assert_store_untouched(store)


@pytest.mark.parametrize(
    ("repo", "access", "token", "words"),
    [
        ("someone/private", {"token": "hf_right"}, None, ("HTTP 401 unauthorized", "hf auth login", "HF_TOKEN")),
        ("someone/private", {"token": "hf_right"}, "hf_wrong", ("HTTP 403 forbidden", "someone/private")),
        (
            "someone/gated",
            {"token": "hf_right", "gated": True},
            None,
            ("gated repo", "accept its conditions", "hf auth login"),
        ),
        ("someone/nothing", None, None, ("someone/nothing", "HTTP 401", "check the name")),
    ],
    ids=["private-no-token", "private-wrong-token", "gated", "no-such-repo"],
)
def test_refusals_are_one_line(hub, store, checkpoints, monkeypatch, repo, access, token, words):
    if access is not None:
        hub.add_repo(repo, checkpoints["SmolVLM"], **access)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    one_line_error(run("pull", repo), *words)
    assert hub.file_requests() == []
    assert_store_untouched(store)


def test_the_token_comes_from_hf_token(hub, store, checkpoints, monkeypatch):
    hub.add_repo("someone/private", checkpoints["SmolVLM"], token="hf_right")
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    assert run("pull", "someone/private", "-q", "F16").exit_code == 0
    assert {r.authorization for r in hub.file_requests()} == {"Bearer hf_right"}


def test_network_down(hub, store):
    hub.stop()
    one_line_error(run("pull", "smolvlm-256m"), "cannot reach the Hugging Face Hub", hub.url, "nothing was added")
    assert_store_untouched(store)


def test_a_dropped_connection_resumes_where_it_stopped(hub, store, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub writes (and resumes from) whole 10 MiB chunks; the tiny file needs small ones
    chunk = 64 * 1024
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    size = len(hub.repos[REPO.lower()].files["model.safetensors"])
    hub.faults.cut_after["model.safetensors"] = cut = 16 * chunk
    result = run("pull", "smolvlm-256m")
    assert result.exit_code == 0, result.output
    first, resumed = hub.gets("model.safetensors")
    assert first.range is None and resumed.range == f"bytes={cut}-"
    assert hub.bytes_sent["model.safetensors"] == size  # no byte was sent twice
    (entry,) = store.entries()
    assert store.is_intact(entry)


def test_a_pull_cut_off_stores_nothing_and_the_next_one_finishes(hub, store):
    hub.faults.cut_after["model.safetensors"] = 100_000
    hub.faults.down_after_cut = True
    one_line_error(run("pull", "smolvlm-256m"), "HTTP 503", "nothing was added to the model store")
    assert_store_untouched(store)

    hub.faults = Faults()
    result = run("pull", "smolvlm-256m")
    assert result.exit_code == 0, result.output
    assert all(len(hub.gets(name)) == 1 for name in SMALL_FILES), "files finished before the cut were fetched again"
    (entry,) = store.entries()
    assert store.is_intact(entry)


def cut_pull(hub, store, tmp_path, monkeypatch) -> tuple[Path, int]:
    """A first pull whose process gives up mid-file: the network goes down after the cut."""
    from huggingface_hub import constants

    chunk = 64 * 1024  # http_get keeps whole chunks; the tiny file needs small ones
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    data = hub.repos[REPO.lower()].files["model.safetensors"]
    hub.faults.cut_after["model.safetensors"] = 16 * chunk
    hub.faults.down_after_cut = True
    one_line_error(run("pull", "smolvlm-256m"), "HTTP 503", "nothing was added to the model store")
    assert_store_untouched(store)
    blobs = tmp_path / "hf" / "hub" / "models--HuggingFaceTB--SmolVLM-256M-Instruct" / "blobs"
    partial = blobs / f"{hashlib.sha256(data).hexdigest()}.smolcli-partial"
    assert partial.stat().st_size == 16 * chunk and partial.read_bytes() == data[: 16 * chunk]
    return partial, len(data)


def assert_stored_as_served(hub, store, partial: Path) -> None:
    (entry,) = store.entries()
    assert store.is_intact(entry)
    cached = partial.with_name(partial.name.removesuffix(".smolcli-partial"))
    assert sha256(cached) == hashlib.sha256(hub.repos[REPO.lower()].files["model.safetensors"]).hexdigest()
    assert not list(partial.parent.glob("*.smolcli-partial")) and not list(partial.parent.glob("*.incomplete"))


def test_the_next_pull_resumes_a_file_cut_mid_way(hub, store, tmp_path, monkeypatch):
    partial, size = cut_pull(hub, store, tmp_path, monkeypatch)
    kept = partial.stat().st_size
    hub.faults = Faults()
    hub.requests.clear()
    result = run("pull", "smolvlm-256m")
    assert result.exit_code == 0, result.output
    (resumed,) = hub.gets("model.safetensors")
    assert resumed.range == f"bytes={kept}-"
    assert hub.bytes_sent["model.safetensors"] == size  # over both pulls: the kept bytes were not sent again
    assert [r.filename for r in hub.requests if r.method == "GET" and r.filename] == ["model.safetensors"]
    assert_stored_as_served(hub, store, partial)


def test_a_server_ignoring_range_still_gives_the_right_file(hub, store, tmp_path, monkeypatch):
    partial, size = cut_pull(hub, store, tmp_path, monkeypatch)
    kept = partial.stat().st_size
    hub.faults = Faults(ignore_range=True)
    hub.requests.clear()
    assert run("pull", "smolvlm-256m").exit_code == 0
    (resumed,) = hub.gets("model.safetensors")
    assert resumed.range == f"bytes={kept}-"
    assert hub.bytes_sent["model.safetensors"] == kept + size  # started over
    assert_stored_as_served(hub, store, partial)


def test_a_partial_file_longer_than_the_file_starts_over(hub, store, tmp_path, monkeypatch):
    partial, size = cut_pull(hub, store, tmp_path, monkeypatch)
    partial.write_bytes(b"\0" * (size + 1))
    hub.faults = Faults()
    hub.requests.clear()
    assert run("pull", "smolvlm-256m").exit_code == 0
    (fresh,) = hub.gets("model.safetensors")
    assert fresh.range is None
    assert_stored_as_served(hub, store, partial)


def test_a_partial_file_of_other_bytes_is_dropped(hub, store, tmp_path, monkeypatch):
    partial, size = cut_pull(hub, store, tmp_path, monkeypatch)
    partial.write_bytes(b"\0" * partial.stat().st_size)
    hub.faults = Faults()
    one_line_error(run("pull", "smolvlm-256m"), "model.safetensors came out corrupt", "pull again")
    assert not partial.exists()
    assert_store_untouched(store)
    assert run("pull", "smolvlm-256m").exit_code == 0
    assert_stored_as_served(hub, store, partial)


def test_offline_mode(hub, store):
    hub.stop()
    for args, env in (
        (("ask", "-m", "smolvlm-256m", "hello"), {"HF_HUB_OFFLINE": "1"}),
        (("ask", "-m", "smolvlm-256m", "--offline", "hello"), None),
        (("chat", "-m", "smolvlm-256m", "--offline"), None),
        (("info", "smolvlm-256m", "--offline"), None),
        (("pull", "smolvlm-256m"), {"HF_HUB_OFFLINE": "1"}),
    ):
        message = one_line_error(
            run(*args, env=env),
            "offline mode is on",
            "smolcli pull smolvlm-256m",
            "SMOLCLI_HOME",
            str(store.root.parent),
        )
        assert "copy" in message
    assert hub.requests == []
    assert_store_untouched(store)


def test_ask_by_name_pulls_on_first_use_then_runs_offline(hub, store, images):
    question = ("ask", "-m", "smolvlm-256m", "-i", images["square"], "--threads", "1", "-n", "4", "What is this?")
    first = run(*question)
    assert first.exit_code == 0, first.output
    assert "not in the model store yet: pulling it once" in first.stderr
    (entry,) = store.entries()
    asked = len(hub.requests)
    hub.stop()
    for env in (None, {"HF_HUB_OFFLINE": "1"}):
        again = run(*question, "--offline", env=env)
        assert again.exit_code == 0, again.output
        assert again.stdout == first.stdout and "pulling" not in again.stderr
    assert len(hub.requests) == asked


def test_a_full_disk_while_converting_leaves_the_store_unchanged(hub, store, monkeypatch):
    from smolcli.convert import mmproj

    assert run("pull", "smolvlm-256m", "-q", "F16").exit_code == 0
    before = store_state(store)
    assert store.index_path.relative_to(store.root).as_posix() in before and any(k.endswith(".gguf") for k in before)

    def write_until_full(path, *args, **kwargs):
        Path(path).write_bytes(b"GGUF" + b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(mmproj, "write_gguf", write_until_full)
    for args in (("-q", "Q8_0"), ("-q", "F16", "--force")):  # a new pair, and one replacing a stored pair
        one_line_error(run("pull", "smolvlm-256m", *args), "no space left on the disk", "the model store is unchanged")
        assert_store_untouched(store, before)
    (kept,) = store.entries()
    assert store.is_intact(kept) and kept.quant == "F16"

    def interrupted(path, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mmproj, "write_gguf", interrupted)
    assert run("pull", "smolvlm-256m", "-q", "Q8_0").exit_code == 130
    assert_store_untouched(store, before)


def test_a_full_disk_while_downloading(hub, store, monkeypatch):
    from huggingface_hub import file_download

    def write_until_full(url, temp_file, *args, **kwargs):
        temp_file.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_download, "http_get", write_until_full)
    one_line_error(
        run("pull", "smolvlm-256m"),
        "no space left for the download in the Hugging Face cache",
        "the model store is unchanged",
    )
    assert_store_untouched(store)


def test_prebuilt_pairs(hub, store, checkpoints, tmp_path):
    built = convert_checkpoint(
        checkpoints["SmolVLM"], tmp_path / "ggml-org", "Q8_0", "F16", name="SmolVLM-256M-Instruct"
    )
    files = {
        "SmolVLM-256M-Instruct-Q8_0.gguf": built.model.read_bytes(),
        "mmproj-SmolVLM-256M-Instruct-f16.gguf": built.mmproj.read_bytes(),
        "README.md": b"# GGUF",
    }
    hub.add_repo(PREBUILT_REPO, files=files)
    result = run("pull", "smolvlm-256m", "--prebuilt")
    assert result.exit_code == 0, result.output
    (entry,) = store.entries()
    assert (entry.source, entry.source_repo, entry.quant, entry.mmproj_type) == (
        "prebuilt",
        PREBUILT_REPO,
        "Q8_0",
        "F16",
    )
    assert entry.model.sha256 == hashlib.sha256(files["SmolVLM-256M-Instruct-Q8_0.gguf"]).hexdigest()
    assert hub.gets("README.md") == [] and hub.gets("model.safetensors") == []
    one_line_error(
        run("pull", "smolvlm-256m", "--prebuilt", "-q", "F16"),
        "has no SmolVLM-256M-Instruct-f16.gguf",
        "its GGUF files: SmolVLM-256M-Instruct-Q8_0.gguf",
    )
    one_line_error(
        run("pull", "smolvlm-256m-base", "--prebuilt"), "no prebuilt GGUF pair is known for smolvlm-256m-base"
    )
    one_line_error(run("pull", "smolvlm-256m", "--prebuilt", "-q", "Q4_K_M"), "unknown type", "Q8_0, F16")


def test_pull_from_a_shell_reads_the_environment(hub, tmp_path):
    """The real entry point, configured only by environment variables, with a progress bar forced onto stderr."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(tmp_path / "shell-hf"),
        SMOLCLI_HOME=str(tmp_path / "shell-home"),
        TQDM_POSITION="-1",
        NO_PROXY="127.0.0.1",
    )
    done = subprocess.run(
        [str(SMOLCLI), "pull", "smolvlm-256m", "-q", "F16"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    model, mmproj = map(Path, done.stdout.splitlines())
    assert model.is_relative_to(tmp_path / "shell-home" / "models") and mmproj.is_file()
    assert "model.safetensors" in done.stderr and "100%" in done.stderr  # huggingface_hub's progress bar
    assert (tmp_path / "shell-hf" / "hub" / "models--HuggingFaceTB--SmolVLM-256M-Instruct").is_dir()
