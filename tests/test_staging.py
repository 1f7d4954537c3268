"""smolcli.util.staging: the one way a folder or a file is built beside its place and renamed in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from smolcli.errors import SmolcliError
from smolcli.util.staging import remove_abandoned, staged_file, staged_folder, swap_in


def test_a_staged_folder_replaces_the_target_only_when_whole(tmp_path):
    target = tmp_path / "pair"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(target, ".building-", "the files", lambda: False) as stage:
            (stage / "half").write_text("half")
            raise RuntimeError("build failed")
    assert [p.name for p in tmp_path.iterdir()] == ["pair"] and (target / "old").is_file()
    with staged_folder(target, ".building-", "the files", lambda: False) as stage:
        (stage / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new"] and [p.name for p in tmp_path.iterdir()] == ["pair"]


def test_another_run_that_finished_first_wins_if_whole(tmp_path, monkeypatch):
    import smolcli.util.staging as staging

    target = tmp_path / "pair"
    real_replace = staging.os.replace

    def other_run_first(source, destination):
        target.mkdir()
        (target / "theirs").write_text("whole")
        real_replace(source, destination)  # fails: the folder is there and not empty

    monkeypatch.setattr(staging.os, "replace", other_run_first)
    with staged_folder(target, ".building-", "the files", lambda: (target / "theirs").is_file()) as stage:
        (stage / "ours").write_text("whole")
    assert [p.name for p in target.iterdir()] == ["theirs"] and [p.name for p in tmp_path.iterdir()] == ["pair"]
    (target / "theirs").unlink()
    with pytest.raises(SmolcliError, match="could not put the files in place; remove the folder and run again"):
        with staged_folder(target, ".building-", "the files", lambda: False) as stage:
            pass


def test_swap_in_puts_the_previous_folder_back_when_commit_fails(tmp_path):
    target, stage = tmp_path / "pair", tmp_path / ".stage"
    target.mkdir()
    (target / "old").write_text("old")
    stage.mkdir()
    (stage / "new").write_text("new")

    def commit():
        raise OSError("index not written")

    with pytest.raises(OSError):
        swap_in(stage, target, commit)
    assert [p.name for p in tmp_path.iterdir()] == ["pair"] and [p.name for p in target.iterdir()] == ["old"]


def test_a_staged_file_is_whole_or_absent(tmp_path):
    target = tmp_path / "index.json"
    with pytest.raises(RuntimeError):
        with staged_file(target) as temp:
            temp.write_text("half")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with staged_file(target) as temp:
        temp.write_text("whole")
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"] and target.read_text() == "whole"


def test_only_stages_of_gone_processes_are_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f".building-{int(gone.stdout)}-x"
    live = tmp_path / f".building-{os.getpid()}-y"
    abandoned.mkdir()
    live.mkdir()
    remove_abandoned(tmp_path, ".building-")
    assert [p.name for p in tmp_path.iterdir()] == [live.name]
