"""`smolcli batch`: one model load, one whole JSONL line per item in input order, bad items as error lines,
resuming after SIGKILL, stable shards, sidecars, and answers equal to `smolcli ask`'s."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

import smolcli
from smolcli.api.batch import in_shard
from smolcli.cli.app import app

from cli_checks import one_line_error

SMOLCLI = Path(sys.executable).parent / "smolcli"
N = 6


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, ["batch", "-t", "1", "-n", str(N), *args], input=input, catch_exceptions=False)


def lines_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def photos(images, tmp_path) -> Path:
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for key in ("square", "wide", "photo"):
        shutil.copy(images[key], folder / images[key].name)
    shutil.copy(images["tall"], folder / "more" / images["tall"].name)
    return folder


def test_batch_answers_equal_ask_answers_item_by_item(tiny_pair, photos):
    result = run("-m", str(tiny_pair[0]), "--prompt", "Describe it.", str(photos))
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    expected = sorted(str(p) for p in photos.rglob("*") if p.is_file())
    assert [line["id"] for line in lines] == expected  # input order: folders walked sorted
    for line in lines:
        ask = CliRunner().invoke(
            app, ["ask", "-m", str(tiny_pair[0]), "-t", "1", "-n", str(N), "-i", line["id"], "--json", "Describe it."]
        )
        reference = json.loads(ask.stdout)
        assert line["text"] == reference["text"]
        assert line["usage"]["prompt_tokens"] == reference["usage"]["prompt_tokens"]
    assert "4 answered, 0 failed, 0 skipped" in result.stderr


def prefix_states(home: Path) -> list[Path]:
    return sorted((home / "prefixes").glob("*.kv"))


def test_a_batch_of_distinct_images_writes_no_prefix_state(tiny_pair, photos, private_smolcli_home):
    """Each item's prefix would be written for nothing: no later item shows its images."""
    result = run("-m", str(tiny_pair[0]), "--prompt", "Describe it.", str(photos))
    assert result.exit_code == 0, result.output
    assert len(lines_of(result.stdout)) == 4
    assert prefix_states(private_smolcli_home) == []
    assert list((private_smolcli_home / "embeddings").rglob("*")) != []  # the caches were on: the tiles were kept
    # the same question by ask stores its prefix (the prefix cache works on these files)
    asked = CliRunner().invoke(
        app, ["ask", "-m", str(tiny_pair[0]), "-t", "1", "-n", str(N), "-i", str(photos / "wide.png"), "Describe it."]
    )
    assert asked.exit_code == 0, asked.output
    assert len(prefix_states(private_smolcli_home)) == 1


def test_a_batch_repeating_an_image_stores_its_prefix_once_and_reuses_it(tiny_pair, images, tmp_path):
    home = tmp_path / "home"
    requests = tmp_path / "requests.jsonl"
    for key in ("photo", "wide"):
        shutil.copy(images[key], tmp_path / f"{key}.png")
    rows = [
        {"id": "first", "prompt": "Describe it.", "images": ["photo.png"]},
        {"id": "other", "prompt": "Describe it.", "images": ["wide.png"]},
        {"id": "again", "prompt": "What colours are in it?", "images": [str(tmp_path / "photo.png")]},
    ]
    requests.write_text("".join(json.dumps(row) + "\n" for row in rows))
    env = {"SMOLCLI_HOME": str(home)}
    result = CliRunner().invoke(
        app, ["batch", "-t", "1", "-n", str(N), "-m", str(tiny_pair[0]), str(requests)], env=env
    )
    assert result.exit_code == 0, result.output
    by_id = {line["id"]: line for line in lines_of(result.stdout)}
    assert len(prefix_states(home)) == 1  # the photo's: the wide image is not shown again
    assert by_id["first"]["usage"]["images_encoded"] > 0
    # the state came whole from the cache: no tile encoded or read from the embedding cache
    assert by_id["again"]["usage"]["images_encoded"] == 0 and by_id["again"]["usage"]["image_cache_hits"] == 0
    alone = CliRunner().invoke(
        app,
        ["ask", "-m", str(tiny_pair[0]), "-t", "1", "-n", str(N), "--no-cache", "--json"]
        + ["-i", str(tmp_path / "photo.png"), "What colours are in it?"],
    )
    reference = json.loads(alone.stdout)
    assert by_id["again"]["text"] == reference["text"]
    assert by_id["again"]["usage"]["prompt_tokens"] == reference["usage"]["prompt_tokens"]


def test_an_unstored_prefix_answers_with_the_same_logprobs(tiny_pair, images, private_smolcli_home):
    """store_prefix=False (what a batch passes for images no later item shows) reads the cache but never writes
    it, and every way answers with the same tokens and log-probabilities."""
    question = ("What colours are in it?", [images["photo"]])
    with smolcli.load(tiny_pair[0], threads=1) as model:
        counters = model.engine.counters
        unstored = model.ask(*question, logprobs=3, max_tokens=N, store_prefix=False)
        assert prefix_states(private_smolcli_home) == [] and counters.prefix_tokens_restored == 0
        stored = model.ask(*question, logprobs=3, max_tokens=N)
        assert len(prefix_states(private_smolcli_home)) == 1
        restored = model.ask(*question, logprobs=3, max_tokens=N, store_prefix=False)
        assert counters.prefix_tokens_restored > 0
    facts = [(answer.text, answer.logprobs) for answer in (unstored, stored, restored)]
    assert facts[0] == facts[1] == facts[2]


def test_bad_rows_become_error_lines_and_the_rest_is_answered(tiny_pair, images, tmp_path):
    requests = tmp_path / "requests.jsonl"
    good_image = shutil.copy(images["square"], tmp_path / "square.png")
    rows = [
        json.dumps({"id": "good", "prompt": "What is it?", "images": ["square.png"]}),  # relative to the file
        json.dumps({"id": "missing", "prompt": "What is it?", "images": ["nowhere.png"]}),
        "{this is not json",
        json.dumps({"id": "unknown", "prompt": "hi", "colour": "red"}),
        json.dumps({"id": "schema", "prompt": "hi", "json_schema": {"type": "integer", "minimum": 1}}),
        json.dumps({"id": "video", "prompt": "hi", "video": "clip.mp4"}),
        "",
        json.dumps({"id": "text-only", "prompt": "Say something.", "max_tokens": 3}),
        json.dumps(
            {
                "id": "structured",
                "prompt": "Count.",
                "json_schema": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
                "max_tokens": 40,
            }
        ),
    ]
    requests.write_text("\n".join(rows) + "\n")
    result = run("-m", str(tiny_pair[0]), str(requests))
    assert result.exit_code == 3, result.output
    lines = lines_of(result.stdout)
    assert [line["id"] for line in lines] == [
        "good",
        "missing",
        "line-3",
        "unknown",
        "schema",
        "video",
        "text-only",
        "structured",
    ]
    by_id = {line["id"]: line for line in lines}
    assert "text" in by_id["good"] and "error" not in by_id["good"]
    assert "nowhere.png" in by_id["missing"]["error"] and "no such image" in by_id["missing"]["error"]
    assert "not JSON" in by_id["line-3"]["error"]
    assert "'colour'" in by_id["unknown"]["error"]
    assert "'minimum'" in by_id["schema"]["error"] and "json_schema" in by_id["schema"]["error"]
    assert "video" in by_id["video"]["error"]
    assert by_id["text-only"]["usage"]["completion_tokens"] <= 3
    jsonschema.validate(by_id["structured"]["json"], {"type": "array", "items": {"type": "boolean"}, "maxItems": 2})
    assert all("\n" not in line.get("error", "") for line in lines)
    assert good_image.exists()


def test_a_killed_batch_resumes_with_exactly_one_line_per_id(tiny_pair, images, tmp_path):
    requests = tmp_path / "requests.jsonl"
    ids = [f"item-{i:03d}" for i in range(150)]
    image = str(images["photo"])
    requests.write_text("".join(json.dumps({"id": i, "prompt": "Describe it.", "images": [image]}) + "\n" for i in ids))
    out = tmp_path / "out.jsonl"
    command = [str(SMOLCLI), "batch", "-m", str(tiny_pair[0]), "-t", "1", "-n", "24", str(requests), "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = out.read_text()
    assert 10 <= before.count("\n") < len(ids), "the batch was not killed mid-way"
    assert before.endswith("\n") and all(json.loads(line)["id"] in ids for line in before.splitlines())
    with open(out, "a") as handle:
        handle.write('{"id": "item-149", "te')  # and a torn line, as a crash of the machine would leave
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    lines = lines_of(out.read_text())
    assert sorted(line["id"] for line in lines) == ids  # each id once, the torn line gone
    assert [line["id"] for line in lines] == ids  # and still in input order
    assert f"{len(ids) - before.count(chr(10))} answered, 0 failed, {before.count(chr(10))} skipped" in finished.stderr


def test_retry_errors_redoes_only_the_failed(tiny_pair, images, tmp_path):
    out = tmp_path / "out.jsonl"
    photo = tmp_path / "photo.jpg"
    first = run("-m", str(tiny_pair[0]), "--prompt", "Describe it.", str(images["square"]), str(photo), "-o", str(out))
    assert first.exit_code == 1  # a missing path is refused before anything runs
    shutil.copy(images["photo"], photo)
    out.write_text(json.dumps({"id": str(photo), "error": "an earlier failure"}) + "\n")
    again = run("-m", str(tiny_pair[0]), "--prompt", "Describe it.", str(images["square"]), str(photo), "-o", str(out))
    assert again.exit_code == 0 and "1 answered, 0 failed, 1 skipped" in again.stderr
    retried = run(
        "-m",
        str(tiny_pair[0]),
        "--prompt",
        "Describe it.",
        str(images["square"]),
        str(photo),
        "-o",
        str(out),
        "--retry-errors",
    )
    assert retried.exit_code == 0, retried.output
    lines = lines_of(out.read_text())
    assert sorted(line["id"] for line in lines) == sorted([str(images["square"]), str(photo)])
    assert all("error" not in line for line in lines)


def test_shards_cover_every_id_once(tiny_pair, photos):
    seen = []
    for index in range(3):
        result = run("-m", str(tiny_pair[0]), "--prompt", "Tag it.", str(photos), "--shard", f"{index}/3")
        assert result.exit_code == 0, result.output
        seen += [line["id"] for line in lines_of(result.stdout)]
    assert sorted(seen) == sorted(str(p) for p in photos.rglob("*") if p.is_file())
    ids = [f"id-{i}" for i in range(300)]
    sizes = [sum(in_shard(i, (k, 3)) for i in ids) for k in range(3)]
    assert sum(sizes) == 300 and min(sizes) > 70  # a fair split, the same on every run and machine
    one_line_error(run("-m", str(tiny_pair[0]), "--prompt", "x", str(photos), "--shard", "3/3"), "shard '3/3'")


def test_sidecars_are_written_beside_each_image_and_kept_unless_overwrite(tiny_pair, photos):
    result = run("-m", str(tiny_pair[0]), "--prompt", "Caption it.", str(photos), "--sidecar")
    assert result.exit_code == 0
    for line in lines_of(result.stdout):
        assert Path(line["id"]).with_suffix(".txt").read_text() == line["text"] + "\n"
    marker = photos / "square.txt"
    marker.write_text("kept\n")
    again = run("-m", str(tiny_pair[0]), "--prompt", "Caption it.", str(photos), "--sidecar")
    assert again.stdout == "" and "0 answered, 0 failed, 4 skipped" in again.stderr
    assert marker.read_text() == "kept\n"
    redone = run("-m", str(tiny_pair[0]), "--prompt", "Caption it.", str(photos), "--sidecar", "--overwrite")
    assert marker.read_text() != "kept\n" and len(lines_of(redone.stdout)) == 4
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
        "required": ["tags"],
    }
    structured = run(
        "-m",
        str(tiny_pair[0]),
        "-n",
        "80",
        "--prompt",
        "Tag.",
        str(photos),
        "--sidecar",
        "--json-schema",
        json.dumps(schema),
    )
    assert structured.exit_code == 0, structured.output
    for line in lines_of(structured.stdout):
        assert json.loads(Path(line["id"]).with_suffix(".json").read_text()) == line["json"]
        jsonschema.validate(line["json"], schema)


def test_stdin_requests_and_bad_invocations(tiny_pair, images, tmp_path):
    request = json.dumps({"id": "a", "prompt": "Hi.", "images": [str(images["square"])]})
    result = run("-m", str(tiny_pair[0]), "-", input=request + "\n")
    assert result.exit_code == 0 and lines_of(result.stdout)[0]["id"] == "a"
    one_line_error(run("-m", str(tiny_pair[0]), str(images["square"])), "--prompt")
    one_line_error(run("-m", str(tiny_pair[0]), "-", "--prompt", "x"), "--prompt")
    one_line_error(run("-m", str(tmp_path / "none.gguf"), "--prompt", "x", str(images["square"])), "none.gguf")
    one_line_error(run("-m", str(tiny_pair[0]), "--prompt", "x", str(tmp_path)), "no images in this folder")
