"""`smolcli batch --ray local`: the same lines as a local batch, answered by Ray actors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_batch import run

from smolcli.runtime.llama.prefix_cache import MAX_BYTES_ENV as PREFIX_MAX_BYTES_ENV

from cli_checks import one_line_error

pytest.importorskip("ray")
SMOLCLI = Path(sys.executable).parent / "smolcli"


def test_ray_answers_equal_a_local_batch_and_bad_rows_stay_errors(tiny_pair, images, tmp_path):
    requests = tmp_path / "requests.jsonl"
    rows = [{"id": key, "prompt": "Describe it.", "images": [str(images[key])]} for key in sorted(images)]
    rows.insert(2, {"id": "missing", "prompt": "Describe it.", "images": [str(tmp_path / "none.png")]})
    rows.append({"id": "unknown", "prompt": "x", "colour": "red"})
    requests.write_text("".join(json.dumps(row) + "\n" for row in rows))
    local = run("-m", str(tiny_pair[0]), str(requests))
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "square", "text": "answered before"}) + "\n")  # resumed: skipped
    command = [str(SMOLCLI), "batch", "-m", str(tiny_pair[0]), "-t", "1", "-n", "6", str(requests), "-o", str(out)]
    # the prefix cache off for the actors: their tiles come from the encoder or the embedding cache, as counted below
    no_prefix = {**os.environ, PREFIX_MAX_BYTES_ENV: "0"}
    remote = subprocess.run(
        [*command, "--ray", "local", "--ray-actors", "2"], capture_output=True, text=True, timeout=300, env=no_prefix
    )
    assert remote.returncode == 3, remote.stderr
    expected = [json.loads(line) for line in local.stdout.splitlines() if json.loads(line)["id"] != "square"]
    got = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert [line["id"] for line in got] == [line["id"] for line in expected]  # input order, square skipped
    for mine, theirs in zip(got, expected, strict=True):
        if "error" in theirs:
            assert "error" in mine and (mine["id"] != "unknown" or "'colour'" in mine["error"])
        else:
            assert (mine["text"], mine["finish_reason"]) == (theirs["text"], theirs["finish_reason"])
            tokens = ("prompt_tokens", "image_tokens", "completion_tokens")
            assert [mine["usage"][k] for k in tokens] == [theirs["usage"][k] for k in tokens]
            # the actors share the embedding cache on disk, so their tiles may come from it
            tiles = mine["usage"]["images_encoded"] + mine["usage"]["image_cache_hits"]
            assert tiles == theirs["usage"]["images_encoded"] + theirs["usage"]["image_cache_hits"] > 0
    assert "1 skipped" in remote.stderr


def test_ray_refuses_what_it_cannot_do(tiny_pair, images, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        json.dumps({"id": "a", "prompt": "x", "images": [str(images["square"])], "max_tokens": 3}) + "\n"
    )
    one_line_error(run("-m", str(tiny_pair[0]), str(requests), "--ray", "local"), "--ray", "a sets max_tokens")
    one_line_error(
        run("-m", str(tiny_pair[0]), "--prompt", "x", str(images["square"]), "--ray", "local", "--sidecar"), "--sidecar"
    )


def test_ray_rows_store_a_prefix_state_only_for_images_a_later_row_shows(tiny_pair, images, tmp_path):
    """As a local batch: distinct images write no prefix state, a repeated one writes one that its repeat restores."""
    home = Path(os.environ["SMOLCLI_HOME"])  # private_smolcli_home: the actors inherit it
    requests = tmp_path / "requests.jsonl"
    shown = ["photo", "wide", "square", "photo"]
    rows = [{"id": f"{i}-{key}", "prompt": "Describe it.", "images": [str(images[key])]} for i, key in enumerate(shown)]
    requests.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out.jsonl"
    command = [str(SMOLCLI), "batch", "-m", str(tiny_pair[0]), "-t", "1", "-n", "4", str(requests), "-o", str(out)]
    # one actor: the rows are answered in order, so the repeat comes after the state is stored
    remote = subprocess.run(
        [*command, "--ray", "local", "--ray-actors", "1"], capture_output=True, text=True, timeout=300
    )
    assert remote.returncode == 0, remote.stderr
    by_id = {line["id"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert sorted(by_id) == sorted(row["id"] for row in rows)
    states = sorted((home / "prefixes").glob("*.kv"))
    assert len(states) == 1, states  # the photo's: wide and square are shown once
    assert by_id["0-photo"]["usage"]["images_encoded"] > 0
    # the repeat's prefix came whole from the stored state: no tile encoded or read from the embedding cache
    again = by_id["3-photo"]["usage"]
    assert again["images_encoded"] == 0 and again["image_cache_hits"] == 0, again
    assert by_id["3-photo"]["text"] == by_id["0-photo"]["text"]
