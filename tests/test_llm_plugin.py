"""The `llm` plugin through the real `llm` CLI (installed in this environment with its entry point).

llm's own folder (LLM_USER_PATH) and smolcli's (SMOLCLI_HOME, the conftest's) are per test, so
nothing reads or writes the user's config, logs or model store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import smolcli
from smolcli.models.smolvlm import SMOLVLM
from smolcli.store.model_store import ModelStore, Provenance

pytest.importorskip("llm")
LLM = Path(sys.executable).with_name("llm")
SMOLCLI = Path(sys.executable).with_name("smolcli")
QUESTION = "Describe this image."


@pytest.fixture
def llm_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "llm"
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a name not in the store must not reach the network
    monkeypatch.delenv("LLM_RAISE_ERRORS", raising=False)
    return home


def llm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LLM), *args], input=stdin, capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


def ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr)
    return run.stdout


def smolcli_answer(model: Path, image: Path, *options: str) -> str:
    run = subprocess.run(
        [str(SMOLCLI), "ask", "-m", str(model), "-i", str(image), QUESTION, *options],
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.decode("utf-8")


def logged(n: int) -> list[dict]:
    return json.loads(ok(llm("logs", "-n", str(n), "--json")))  # the last n, oldest first


def store_tiny_pair(tiny_pair) -> None:
    """The tiny pair filed in the SMOLCLI_HOME store as smolvlm-256m's F16 pair."""
    origin = Provenance(
        name="smolvlm-256m",
        repo_id="HuggingFaceTB/SmolVLM-256M-Instruct",
        family=SMOLVLM.name,
        source="converted",
        source_repo="HuggingFaceTB/SmolVLM-256M-Instruct",
        revision="main",
        commit="0" * 40,
        quant="F16",
        mmproj_type="F16",
    )

    def build(stage: Path):
        copies = []
        for path in tiny_pair:
            copy = stage / path.name
            copy.write_bytes(path.read_bytes())
            copies.append(copy)
        return copies[0], copies[1]

    ModelStore().add(origin, build)


def test_a_prompt_with_an_image_answers_as_smolcli_ask(llm_home, tiny_pair, images):
    model_path = str(tiny_pair[0])
    assert ok(llm("smolvlm", "add", model_path)).strip() == model_path  # the id is the path as added
    options = ("-o", "max_tokens", "12", "-o", "ignore_eos", "1")
    answer = ok(llm("-m", model_path, QUESTION, "-a", str(images["photo"]), *options))
    expected = smolcli_answer(tiny_pair[0], images["photo"], "-n", "12", "--ignore-eos")
    assert answer == expected and len(expected.strip()) > 0
    (entry,) = logged(1)
    details = json.loads(entry["token_details"])
    assert entry["output_tokens"] == 12 and details["image_tokens"] > 0
    assert entry["response_json"]["finish_reason"] == "length"


def test_models_lists_the_registry_the_store_and_added_pairs(llm_home, tiny_pair, images):
    store_tiny_pair(tiny_pair)
    ok(llm("smolvlm", "add", str(tiny_pair[0].parent), "--name", "tiny-folder"))
    listed = ok(llm("models"))
    for model_id in ("smolvlm-256m", "smolvlm-2.2b", "smolvlm2-500m", "smolvlm-256m:converted-F16-F16", "tiny-folder"):
        assert f"SmolVLM: {model_id}" in listed, model_id
    expected = smolcli_answer(tiny_pair[0], images["square"], "-n", "6", "--ignore-eos")
    for model_id in ("smolvlm-256m:converted-F16-F16", "smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct"):
        run = llm(
            "-m", model_id, QUESTION, "-a", str(images["square"]), "-o", "max_tokens", "6", "-o", "ignore_eos", "1"
        )
        assert ok(run) == expected, model_id
    assert ok(llm("smolvlm", "pairs")).startswith("tiny-folder\t")
    ok(llm("smolvlm", "remove", "tiny-folder"))
    assert "SmolVLM: tiny-folder" not in ok(llm("models"))


def test_chat_continues_one_library_chat(llm_home, tiny_pair, images):
    ok(llm("smolvlm", "add", str(tiny_pair[0]), "--name", "tiny"))
    chat = llm(
        "chat", "-m", "tiny", "-f", f"image:{images['photo']}", "-o", "max_tokens", "8", "-o", "ignore_eos", "1",
        stdin=f"{QUESTION}\nAnd the colors?\nexit\n",
    )  # fmt: skip
    ok(chat)
    first, second = logged(2)
    assert first["conversation_id"] == second["conversation_id"]
    # the follow-up evaluated only its own tokens: the first turn's image is in the KV cache, not encoded again
    second_details = json.loads(second["token_details"])
    assert second_details == {"image_tokens": 0, "images_encoded": 0, "image_cache_hits": 0}
    assert second["input_tokens"] < first["input_tokens"] - json.loads(first["token_details"])["image_tokens"] + 20
    with smolcli.load(tiny_pair[0]) as model:
        library = model.chat(max_tokens=8, ignore_eos=True)
        expected = [library.send(QUESTION, images=[images["photo"]]).text, library.send("And the colors?").text]
    assert [first["response"], second["response"]] == expected


def test_bad_input_is_one_line_without_a_traceback(llm_home, tiny_pair, images, tmp_path):
    ok(llm("smolvlm", "add", str(tiny_pair[0]), "--name", "tiny"))
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    runs = {
        "does not support attachments of type 'text/plain'": llm("-m", "tiny", "hi", "-a", str(text_file)),
        "2 images were given": llm("-m", "tiny", "<image> only one", "-a", str(images["square"]), "-a", str(images["wide"])),
        "not in the model store": llm("-m", "smolvlm-500m", "hi"),
        "not a GGUF file": llm("smolvlm", "add", str(text_file)),
    }  # fmt: skip
    for words, run in runs.items():
        assert run.returncode == 1, (words, run.stdout, run.stderr)
        assert "Traceback" not in run.stderr and run.stdout == "", (words, run.stderr)
        assert words in run.stderr, (words, run.stderr)


def test_schema_answers_validate_and_equal_the_librarys(llm_home, tiny_pair, images):
    import jsonschema

    schema = {
        "type": "object",
        "properties": {"caption": {"type": "string", "maxLength": 12}, "count": {"type": "integer"}},
        "required": ["caption", "count"],
        "additionalProperties": False,
    }
    ok(llm("smolvlm", "add", str(tiny_pair[0]), "--name", "tiny"))
    run = llm(
        "-m", "tiny", QUESTION, "-a", str(images["square"]), "--schema", json.dumps(schema), "-o", "max_tokens", "120"
    )
    value = json.loads(ok(run))
    jsonschema.validate(value, schema)
    with smolcli.load(tiny_pair[0]) as model:
        expected = model.ask(QUESTION, [images["square"]], max_tokens=120, json_schema=schema).json
    assert value == expected
    (entry,) = logged(1)
    assert entry["schema_json"] == schema
    refused = llm("-m", "tiny", "hi", "--schema", json.dumps({"type": "object", "patternProperties": {"^a": {}}}))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr and refused.stdout == "", refused.stderr
