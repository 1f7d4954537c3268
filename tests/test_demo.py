"""`smolcli demo`: the offline main job, its cache, and rebuilding a damaged cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import smolcli
from smolcli.cli.app import app
from smolcli.runtime.gguf.gguf_file import read_gguf
from smolcli.synthetic.demo import MARKER, DemoFiles, demo_folder, is_complete
from smolcli.util.user_cache import cache_dir


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SMOLCLI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run_demo():
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    return result


def all_files(files: DemoFiles) -> list[Path]:
    return [
        files.model,
        files.mmproj,
        files.image,
        files.checkpoint / "config.json",
        files.checkpoint / "model.safetensors",
    ]


def test_demo_answers_explains_the_noise_and_reuses_its_files(home):
    first = run_demo()
    files = DemoFiles.inside(home / "demo")
    assert first.stdout.strip()
    assert "noise" in first.stderr and "random weights" in first.stderr
    assert "note:" not in first.stdout and str(home) not in first.stdout  # stdout: the answer only
    for path in all_files(files):
        assert path.is_file(), path
        assert str(path) in first.stderr or path.parent == files.checkpoint
    assert read_gguf(files.model).kind == "model" and read_gguf(files.mmproj).kind == "mmproj"
    assert json.loads((files.folder / MARKER).read_text())["smolcli"] == smolcli.__version__
    # no staging folder left behind: the demo's files and the vision encoder's ONNX form
    assert sorted(p.name for p in home.iterdir()) == ["demo", "onnx-vision"]

    stamps = {path: path.stat().st_mtime_ns for path in all_files(files)}
    second = run_demo()
    assert "reusing the demo files" in second.stderr and "building" not in second.stderr
    assert {path: path.stat().st_mtime_ns for path in all_files(files)} == stamps
    assert second.stdout == first.stdout  # greedy on the same files: the same answer

    third = CliRunner().invoke(app, ["demo", "--rebuild"])
    assert third.exit_code == 0, third.output
    assert "building" in third.stderr and ".demo-building" not in third.stderr
    assert files.model.stat().st_mtime_ns != stamps[files.model]
    assert third.stdout == first.stdout  # the same seed rebuilds the same model


@pytest.mark.parametrize("damage", ["missing mmproj", "truncated model", "no marker", "other version"])
def test_a_half_written_cache_is_rebuilt(home, damage):
    run_demo()
    files = DemoFiles.inside(home / "demo")
    if damage == "missing mmproj":
        files.mmproj.unlink()
    elif damage == "truncated model":
        data = files.model.read_bytes()
        files.model.write_bytes(data[: len(data) // 3])
    elif damage == "no marker":
        (files.folder / MARKER).unlink()
    else:
        (files.folder / MARKER).write_text(json.dumps({"smolcli": "0.0.0-old"}))
    assert not is_complete(files)

    again = run_demo()
    assert "building" in again.stderr
    assert is_complete(files)
    assert again.stdout.strip()


def test_a_folder_without_any_demo_files_is_rebuilt(home):
    (home / "demo").mkdir(parents=True)
    (home / "demo" / "leftover.tmp").write_text("interrupted")
    result = run_demo()
    assert result.stdout.strip()
    assert not (home / "demo" / "leftover.tmp").exists()
    assert is_complete(DemoFiles.inside(home / "demo"))


def test_demo_runs_without_torch_or_transformers(home):
    run_demo()  # build in this process; the child only reuses
    script = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # importing them now raises ImportError
        sys.modules["transformers"] = None
        from smolcli.cli.app import app
        app(["demo", "--max-tokens", "4"])
    """)
    child = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SMOLCLI_HOME": str(home)},
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip()
    assert "reusing the demo files" in child.stderr


def test_cache_folder_comes_from_smolcli_home_else_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOLCLI_HOME", str(tmp_path / "custom"))
    assert demo_folder() == tmp_path / "custom" / "demo"
    monkeypatch.delenv("SMOLCLI_HOME")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache_dir() == tmp_path / "xdg" / "smolcli"
        monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir().parts[-1] in ("smolcli", "Cache")
    assert str(cache_dir()).startswith(str(Path.home()))
