"""The library: `smolcli.load(...).ask(...)` answers what `smolcli ask` answers, streams the same text, chats
without re-encoding images, reports logprobs that raw llama.cpp computes too, and cleans up after itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import smolcli
from smolcli.synthetic.images import photo_like

from raw_llama import RawMtmd

SMOLCLI = Path(sys.executable).parent / "smolcli"
QUESTION = "What is in this image?"
ROWS_BOUND = (
    5e-3  # one run of rows against raw mtmd's chunk by chunk: see test_logprobs_are_what_raw_llama_cpp_computes
)
N = 8


@pytest.fixture
def model(tiny_pair):
    with smolcli.load(tiny_pair[0], threads=1) as loaded:
        yield loaded


def cli_ask(model_path: Path, image: Path, *extra: str) -> dict:
    result = subprocess.run(
        [
            str(SMOLCLI),
            "ask",
            "-m",
            str(model_path),
            "-i",
            str(image),
            "-n",
            str(N),
            "-t",
            "1",
            "--json",
            *extra,
            QUESTION,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_readme_example_answers_what_smolcli_ask_answers(tiny_pair, images):
    model = smolcli.load(str(tiny_pair[0]), threads=1)
    answer = model.ask(QUESTION, images=[str(images["photo"])], max_tokens=N)
    reference = cli_ask(tiny_pair[0], images["photo"])
    assert answer.text == reference["text"]
    assert answer.finish_reason == reference["finish_reason"]
    assert answer.usage.prompt_tokens == reference["usage"]["prompt_tokens"]
    assert answer.usage.image_tokens == reference["usage"]["image_tokens"] > 0
    assert answer.usage.completion_tokens == reference["usage"]["completion_tokens"]
    assert answer.timings.prefill_s > 0 and answer.timings.load_s > 0
    model.close()
    assert not model.loaded


def test_streaming_yields_the_same_text(model, images):
    whole = model.ask(QUESTION, images=[images["photo"]], max_tokens=N, ignore_eos=True)
    stream = model.ask(QUESTION, images=[images["photo"]], max_tokens=N, ignore_eos=True, stream=True)
    assert stream.answer is None  # nothing is generated before the stream is read
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == whole.text == stream.answer.text
    assert stream.answer.tokens == whole.tokens


def test_a_path_bytes_and_a_pil_image_are_the_same_image(model, images):
    path = images["photo"]
    restored = model.engine.counters.prefix_tokens_restored
    answers = [
        model.ask(QUESTION, images=[source], max_tokens=N, ignore_eos=True)
        for source in (path, str(path), path.read_bytes(), Image.open(path))
    ]
    assert len({a.text for a in answers}) == 1
    assert len({tuple(a.tokens) for a in answers}) == 1
    # the caches are on by default: only the first of the four encoded anything; the others restored the
    # prompt's prefix state it stored (tests/test_prefix_cache.py), reading no tile at all
    assert answers[0].usage.images_encoded > 0
    assert [a.usage.images_encoded for a in answers[1:]] == [0, 0, 0]
    assert [a.usage.image_cache_hits for a in answers[1:]] == [0, 0, 0]
    assert model.engine.counters.prefix_tokens_restored > restored


def test_a_chats_second_turn_encodes_no_image(tiny_pair, images):
    with smolcli.load(tiny_pair[0], threads=1, embedding_cache=False) as model:
        chat = model.chat(system="Be brief.", max_tokens=N)
        first = chat.send("Describe it.", images=[images["square"]])
        second = chat.send("And the colors?")
        assert first.usage.images_encoded > 0 and first.usage.image_tokens > 0
        assert second.usage.images_encoded == 0 and second.usage.image_tokens == 0
        # the second turn evaluated only its own text, on top of the first turn in the cache
        assert second.usage.prompt_tokens < first.usage.prompt_tokens
        assert chat.n_past == sum(t.prompt_tokens + t.completion_tokens for t in chat.turns)
        assert [m.role for m in chat.messages] == ["user", "assistant", "user", "assistant"]


def test_an_ask_between_two_turns_leaves_the_chat_where_it_was(tiny_pair, images):
    def two_turns(interrupt: bool) -> tuple[str, str]:
        with smolcli.load(tiny_pair[0], threads=1) as model:
            chat = model.chat(max_tokens=N)
            first = chat.send("Describe it.", images=[images["wide"]]).text
            if interrupt:
                model.ask("Something else entirely.", max_tokens=N)
            return first, chat.send("And the colors?").text

    assert two_turns(interrupt=True) == two_turns(interrupt=False)


def test_logprobs_are_what_raw_llama_cpp_computes(tiny_pair, tmp_path):
    # the tiny model's own longest edge (96 px) in whole tiles: neither side resizes it before cutting, so raw
    # mtmd's tiles are the ones smolcli hands mtmd, and their global views (a 2:1 Lanczos) agree: the embeddings
    # are equal bit for bit. smolcli decodes the prompt as one run of rows where raw mtmd decodes chunk by chunk,
    # which moves llama.cpp's logits with CPU flash attention (test_prompt_rows: up to 3.8e-3), hence ROWS_BOUND
    square = tmp_path / "square96.png"
    photo_like(96, 96, 1).save(square)
    with smolcli.load(tiny_pair[0], threads=1, vision_engine="mtmd") as model:  # raw llama.cpp encodes with mtmd
        answer = model.ask(QUESTION, images=[square], max_tokens=N, ignore_eos=True, logprobs=3)
    assert len(answer.logprobs) == len(answer.tokens) == N
    with RawMtmd(*tiny_pair) as raw:
        raw.eval_prompt(
            f"<|im_start|>User:<__media__>{QUESTION}<end_of_utterance>\nAssistant:", [square]
        )  # PNG: both decoders agree
        for entry in answer.logprobs:
            logits = np.ctypeslib.as_array(raw.llama.llama_get_logits_ith(raw.ctx, -1), shape=(raw.n_vocab,))
            shifted = logits.astype(np.float64) - logits.max()
            expected = shifted - np.log(np.exp(shifted).sum())
            top = np.argsort(-expected, kind="stable")[:3]
            assert entry.id == int(top[0])  # greedy: the likeliest token
            assert entry.logprob == pytest.approx(expected[entry.id], abs=ROWS_BOUND)
            assert [t.id for t in entry.top_logprobs] == [int(i) for i in top]
            assert [t.logprob for t in entry.top_logprobs] == pytest.approx([expected[i] for i in top], abs=ROWS_BOUND)
            raw._decode([entry.id])
    # a token can end inside a UTF-8 character: its bytes, joined, are the answer's text
    joined = b"".join(bytes(entry.bytes) for entry in answer.logprobs)
    assert joined.decode("utf-8", "replace").removeprefix(" ") == answer.text


def test_ask_json_logprobs_has_openais_shape_plus_ids(tiny_pair, images, model):
    report = cli_ask(tiny_pair[0], images["photo"], "--logprobs", "2", "--ignore-eos")
    content = report["logprobs"]["content"]
    assert len(content) == N
    assert set(content[0]) == {"id", "token", "logprob", "bytes", "top_logprobs"}
    assert set(content[0]["top_logprobs"][0]) == {"id", "token", "logprob", "bytes"}
    assert all(len(entry["top_logprobs"]) == 2 for entry in content)
    library = model.ask(QUESTION, images=[images["photo"]], max_tokens=N, ignore_eos=True, logprobs=2)
    assert [entry["id"] for entry in content] == library.tokens


def test_a_text_question_loads_no_vision_encoder(model):
    answer = model.ask("Say something.", max_tokens=4)
    assert answer.usage.image_tokens == 0 and answer.mmproj is None
    assert model.engine.mtmd_ctx is None


def test_errors_name_the_librarys_settings(tiny_pair, model):
    with pytest.raises(smolcli.BadInput, match=r"threads= must be at least 1"):
        smolcli.load(tiny_pair[0], threads=0)
    with pytest.raises(smolcli.BadInput, match=r"max_tokens= must be at least 1"):
        model.ask("hi", max_tokens=0)
    with pytest.raises(smolcli.BadInput, match="an image must be a path, bytes or a PIL image, not int"):
        model.ask("hi", images=[42])
    with pytest.raises(smolcli.ContextFull, match=r"raise ctx=") as full:
        with smolcli.load(tiny_pair[0], threads=1, ctx=256) as small:
            small.ask("hello " * 300, max_tokens=4)
    assert full.value.n_ctx == 256 and full.value.n_new > 256
    with pytest.raises(smolcli.MemoryPlanRefused, match=r"max_memory= 1M allows") as refused:
        smolcli.load(tiny_pair[0], max_memory="1M").ask("hi")
    assert refused.value.limit == 10**6 and refused.value.plan.total > 10**6


def test_an_unclosed_model_exits_cleanly(tiny_pair, images):
    script = (
        "import smolcli, sys\n"
        f"model = smolcli.load({str(tiny_pair[0])!r}, threads=1)\n"
        f"chat = model.chat(max_tokens=2); chat.send('hi', images=[{str(images['square'])!r}])\n"
        "print(model.ask('hi', max_tokens=2).finish_reason)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("stop", "length")
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


def test_the_public_api_is_curated():
    assert set(smolcli.__all__) >= {"load", "Model", "Chat", "Answer", "SmolcliError", "__version__"}
    for name in smolcli.__all__:
        assert getattr(smolcli, name) is not None
    assert smolcli.load.__doc__ and smolcli.Model.ask.__doc__ and smolcli.Model.chat.__doc__


def test_clearing_a_chat_held_aside_starts_it_over(tiny_pair, images):
    with smolcli.load(tiny_pair[0], threads=1) as model:
        fresh = model.chat(max_tokens=N).send("Describe it.", images=[images["wide"]]).text
        chat = model.chat(max_tokens=N)
        chat.send("Something first.")
        model.ask("Meanwhile, another question.", max_tokens=N)  # the chat's context is put aside
        chat.clear()
        assert chat.n_past == 0 and chat.messages == []
        assert chat.send("Describe it.", images=[images["wide"]]).text == fresh
        assert chat.n_past == sum(t.prompt_tokens + t.completion_tokens for t in chat.turns[-1:])
