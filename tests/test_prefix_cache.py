"""The on-disk prefix cache: a second question about the same images, in a new process, restores the KV state of
the prompt's shared prefix (template and image tokens) and prefills only its own tokens, answering as the first.

End to end through `smolcli ask --json` in fresh processes (only the files under SMOLCLI_HOME carry over), the
library's counters, and the store itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from smolcli import load
from smolcli.cli.app import app
from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.llama.prefix_cache import HEADER, MAX_BYTES_ENV, PrefixCache, PrefixKey
from smolcli.runtime.vision.images import load_image
from smolcli.runtime.vision.onnx_vision import OnnxVisionEncoder

QUESTION = "What is in the picture?"


def ask_process(model, image, question: str = QUESTION, *extra: str) -> dict:
    """`smolcli ask --json` in a process of its own: greedy, 6 tokens, the top 5 logprobs of each."""
    command = [sys.executable, "-m", "smolcli", "ask", "--threads", "1", "-m", str(model), "-i", str(image)]
    command += [question, "-n", "6", "--ignore-eos", "--json", "--logprobs", "5", *extra]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def answer_facts(report: dict) -> tuple:
    """The greedy answer and every logprob, compared bit for bit (JSON floats round-trip exactly)."""
    return report["text"], report["logprobs"]


def states(home) -> list:
    return sorted((home / "prefixes").glob("*.kv"))


def test_second_process_restores_the_prefix_and_answers_bit_for_bit(tiny_pair, images, private_smolcli_home):
    model, _ = tiny_pair
    cold = ask_process(model, images["photo"])
    assert cold["usage"]["images_encoded"] >= 1
    assert len(states(private_smolcli_home)) == 1

    warm = ask_process(model, images["photo"])
    assert answer_facts(warm) == answer_facts(cold)
    # the prefix's state came whole from disk: no tile was encoded or even read from the embedding cache
    assert warm["usage"]["images_encoded"] == 0 and warm["usage"]["image_cache_hits"] == 0
    assert warm["vision_engine"] == cold["vision_engine"] != "mtmd"  # the encoder that made the stored tiles
    assert warm["usage"]["prompt_tokens"] == cold["usage"]["prompt_tokens"]
    assert warm["usage"]["image_tokens"] == cold["usage"]["image_tokens"]


def test_another_question_about_the_same_image_equals_its_own_cold_run(tiny_pair, images, private_smolcli_home):
    model, _ = tiny_pair
    ask_process(model, images["wide"])  # stores the prefix
    second = ask_process(model, images["wide"], "Describe it in one word.")
    assert second["usage"]["images_encoded"] == 0 and second["usage"]["image_cache_hits"] == 0
    for path in private_smolcli_home.iterdir():  # a cold run of that question alone, nothing stored
        subprocess.run(["rm", "-rf", str(path)], check=True)
    cold = ask_process(model, images["wide"], "Describe it in one word.")
    assert cold["usage"]["images_encoded"] >= 1
    assert answer_facts(second) == answer_facts(cold)


def test_no_cache_stores_nothing_and_answers_bit_for_bit_the_same(tiny_pair, images, private_smolcli_home):
    model, _ = tiny_pair
    uncached = ask_process(model, images["photo"], QUESTION, "--no-cache")
    assert states(private_smolcli_home) == []
    cached = ask_process(model, images["photo"])
    assert len(states(private_smolcli_home)) == 1
    # without the cache the prompt goes in in the same two parts (runtime/llama/prefix_cache.py)
    assert answer_facts(cached) == answer_facts(uncached)


def test_damaged_entry_is_ignored_and_written_again(tiny_pair, images, private_smolcli_home):
    model, _ = tiny_pair
    cold = ask_process(model, images["square"])
    (entry,) = states(private_smolcli_home)
    whole = entry.read_bytes()
    damaged = bytearray(whole)
    damaged[-1] ^= 0xFF  # one flipped byte of the state: its checksum fails
    entry.write_bytes(bytes(damaged))
    again = ask_process(model, images["square"])
    assert answer_facts(again) == answer_facts(cold)
    assert entry.read_bytes() == whole  # evaluated again and stored whole

    entry.write_bytes(whole[: HEADER.size + 10])  # cut short, as a killed writer without the rename would leave
    assert answer_facts(ask_process(model, images["square"])) == answer_facts(cold)
    assert entry.read_bytes() == whole


def test_restored_into_a_context_of_another_size(tiny_pair, images):
    model, mmproj = tiny_pair
    answers = []
    for ctx in (2048, 4096, 2048):
        with load(model, mmproj=mmproj, threads=1, ctx=ctx) as loaded:
            answer = loaded.ask(QUESTION, images=[images["photo"]], max_tokens=4, ignore_eos=True, logprobs=3)
            answers.append((answer.text, answer.logprobs, loaded.engine.counters.prefix_tokens_restored))
    assert answers[0][2] == 0  # stored
    assert answers[1][2] > 0 and answers[2][2] == answers[1][2]  # restored, in either size
    assert answers[0][:2] == answers[1][:2] == answers[2][:2]


def test_off_with_embedding_cache_false(tiny_pair, images, private_smolcli_home):
    model, mmproj = tiny_pair
    for _ in range(2):
        with load(model, mmproj=mmproj, threads=1, embedding_cache=False) as loaded:
            loaded.ask(QUESTION, images=[images["photo"]], max_tokens=2)
            assert loaded.engine.counters.prefix_tokens_restored == 0
    assert states(private_smolcli_home) == []


def test_bounded_to_nothing_it_is_off(tiny_pair, images, private_smolcli_home, monkeypatch):
    model, mmproj = tiny_pair
    with load(model, mmproj=mmproj, threads=1) as loaded:
        loaded.ask(QUESTION, images=[images["photo"]], max_tokens=2)
    assert len(states(private_smolcli_home)) == 1
    monkeypatch.setenv(MAX_BYTES_ENV, "0")
    with load(model, mmproj=mmproj, threads=1) as loaded:
        answer = loaded.ask(QUESTION, images=[images["photo"]], max_tokens=2)
        assert loaded.engine.counters.prefix_tokens_restored == 0  # the stored state is not read either
        assert answer.usage.image_cache_hits > 0


def test_cache_info_and_clear_show_the_prefix_states(tiny_pair, images, private_smolcli_home):
    model, _ = tiny_pair
    ask_process(model, images["photo"])
    (entry,) = states(private_smolcli_home)
    info = CliRunner().invoke(app, ["cache", "info"])
    assert info.exit_code == 0, info.stderr
    assert f"prefix states: 1 in {private_smolcli_home / 'prefixes'}, {entry.stat().st_size} bytes" in info.stdout
    assert MAX_BYTES_ENV in info.stdout
    cleared = CliRunner().invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0, cleared.stderr
    assert "removed 1 prefix states" in cleared.stdout
    assert states(private_smolcli_home) == []


def test_bad_size_bound_is_one_line_error(tiny_pair, images, monkeypatch):
    model, _ = tiny_pair
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    result = CliRunner().invoke(app, ["ask", "-m", str(model), "-i", str(images["photo"]), QUESTION, "-n", "1"])
    assert result.exit_code != 0
    assert f"{MAX_BYTES_ENV}='lots' is not a size" in result.stderr
    assert "Traceback" not in result.stderr
    info = CliRunner().invoke(app, ["cache", "info"])
    assert info.exit_code == 1 and info.stdout == ""  # refused before any line


# --- the store itself ------------------------------------------------------------------------


def key(n_tokens: int = 4, model: str = "model-digest") -> PrefixKey:
    return PrefixKey(
        model, "encoder-digest", (("text", 1, 2), ("image", "img", 0, 2)), n_tokens, "f16", 1, True, 0, 1, False, "x"
    )


def test_put_then_get_round_trips_and_other_keys_miss(tmp_path):
    cache = PrefixCache(tmp_path, max_bytes=1 << 20)
    state = memoryview(os.urandom(1000))
    assert cache.put(key(), state)
    assert cache.get(key()) == bytearray(state)
    assert cache.get(key(model="another")) is None
    assert cache.get(key(n_tokens=5)) is None


def test_least_recently_used_state_goes_first(tmp_path):
    cache = PrefixCache(tmp_path, max_bytes=2 * (HEADER.size + 1000))
    first, second, third = key(model="a"), key(model="b"), key(model="c")
    cache.put(first, memoryview(os.urandom(1000)))
    cache.put(second, memoryview(os.urandom(1000)))
    old = (tmp_path / second.file_name()).stat().st_mtime - 10
    os.utime(tmp_path / second.file_name(), (old, old))
    assert cache.get(first) is not None  # used last: kept
    cache.put(third, memoryview(os.urandom(1000)))
    assert cache.get(second) is None
    assert cache.get(first) is not None and cache.get(third) is not None
    assert cache.info() == (2, 2 * (HEADER.size + 1000))


@pytest.mark.parametrize("size", [0, HEADER.size - 1, HEADER.size + 999])
def test_short_or_damaged_states_are_misses_and_removed(tmp_path, size):
    cache = PrefixCache(tmp_path, max_bytes=1 << 20)
    cache.put(key(), memoryview(os.urandom(1000)))
    path = tmp_path / key().file_name()
    path.write_bytes(path.read_bytes()[:size])
    assert cache.get(key()) is None
    assert not path.exists()


# --- against the prompt evaluated whole --------------------------------------------------------

PROMPT = "<|im_start|>User:<image>What is in the picture?<end_of_utterance>\nAssistant:"


def last_logits(pair, image, folder, flash: bool, cache: PrefixCache | None, n_ctx: int = 2048, whole=False):
    """The prompt's last logits and the prefix tokens restored, in an engine of its own (as a new process has);
    whole: the prompt evaluated in one part, as before the prefix cache (and as a chat's first turn)."""
    encoder = OnnxVisionEncoder(2, "fp32", folder=folder)
    options = EngineOptions(threads=2, vision_encoder=encoder, flash_attention=flash, prefix_cache=cache)
    with Engine(resolve_model_files(pair.model, pair.mmproj), options) as engine:
        context = engine.new_context(n_ctx)
        prompt = engine.tokenize(PROMPT, [load_image(image)])
        engine.evaluate(prompt, context, reuse_prefix=not whole)
        assert context.n_past == prompt.n_tokens
        return context.last_logits(), engine.counters.prefix_tokens_restored


@pytest.mark.parametrize("quant", ["F32", "Q4_K_M"])
def test_without_flash_attention_a_restored_prefix_gives_the_whole_prompts_logits(quant, converted, images, tmp_path):
    pair = converted(quant, "F16")
    whole, _ = last_logits(pair, images["photo"], tmp_path, False, None, whole=True)
    split, _ = last_logits(pair, images["photo"], tmp_path, False, None)
    cache = PrefixCache(tmp_path / "prefixes")
    stored, restored = last_logits(pair, images["photo"], tmp_path, False, cache)
    assert restored == 0 and cache.info()[0] == 1
    again, restored = last_logits(pair, images["photo"], tmp_path, False, cache, n_ctx=4096)
    assert restored > 0
    assert np.array_equal(stored, again)
    assert np.array_equal(split, stored)
    assert np.array_equal(whole, stored), float(np.abs(whole - stored).max())


def test_with_flash_attention_the_two_parts_move_the_logits_within_its_rounding(converted, images, tmp_path):
    """CPU flash attention rounds differently when a few tokens attend over many (docs/video.md): the question's
    own tokens after the prefix are such a batch, so against the prompt evaluated whole the logits move within
    that rounding; split, stored and restored give the same bits."""
    pair = converted("F32", "F16")
    whole, _ = last_logits(pair, images["photo"], tmp_path, True, None, whole=True)
    split, _ = last_logits(pair, images["photo"], tmp_path, True, None)
    cache = PrefixCache(tmp_path / "prefixes")
    stored, _ = last_logits(pair, images["photo"], tmp_path, True, cache)
    again, restored = last_logits(pair, images["photo"], tmp_path, True, cache)
    assert restored > 0 and np.array_equal(stored, again) and np.array_equal(split, stored)
    assert float(np.abs(whole - stored).max()) <= 1e-2
