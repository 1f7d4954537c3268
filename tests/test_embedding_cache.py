"""The on-disk image-embedding cache: a known image skips the vision encoder and answers the same.

End-to-end through `smolcli ask --json` (each CliRunner call loads the model afresh, so
only the files under SMOLCLI_HOME carry over), and the store itself directly.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from smolcli.cli.app import app
from smolcli.runtime.llama.prefix_cache import MAX_BYTES_ENV as PREFIX_MAX_BYTES_ENV
from smolcli.runtime.vision.embedding_cache import HEADER, MAX_BYTES_ENV, EmbeddingCache, EmbeddingKey

QUESTION = "What is in the picture?"


@pytest.fixture(autouse=True)
def no_prefix_states(monkeypatch):
    """These tests are about the tiles' embeddings: a stored prefix state would skip them altogether on a second
    ask (tests/test_prefix_cache.py), so it is bounded to nothing here."""
    monkeypatch.setenv(PREFIX_MAX_BYTES_ENV, "0")


def ask_report(model, image, *extra: str) -> dict:
    result = CliRunner().invoke(
        app,
        [
            "ask",
            "--threads",
            "1",
            "-m",
            str(model),
            "-i",
            str(image),
            QUESTION,
            "-n",
            "12",
            "--ignore-eos",
            "--json",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def entries(home) -> list:
    return sorted((home / "embeddings").glob("*.emb"))


def key(tile: int = 0, n_tokens: int = 4, n_embd: int = 8) -> EmbeddingKey:
    return EmbeddingKey("image-digest", "mmproj-digest", tile, n_tokens, n_embd)


def floats(k: EmbeddingKey, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(k.n_tokens * k.n_embd).astype(np.float32)


# --- through ask -----------------------------------------------------------------------------


def test_second_ask_reuses_every_tile_and_answers_the_same(tiny_pair, images, private_smolcli_home):
    model, _ = tiny_pair
    cold = ask_report(model, images["photo"])
    tiles = cold["usage"]["images_encoded"]
    assert tiles >= 1 and cold["usage"]["image_cache_hits"] == 0
    assert len(entries(private_smolcli_home)) == tiles

    warm = ask_report(model, images["photo"])
    assert warm["text"] == cold["text"]
    assert warm["usage"]["images_encoded"] == 0
    assert warm["usage"]["image_cache_hits"] == tiles
    assert warm["usage"]["image_tokens"] == cold["usage"]["image_tokens"]


def test_no_cache_encodes_again_and_stores_nothing(tiny_pair, images, private_smolcli_home):
    model, _ = tiny_pair
    cold = ask_report(model, images["square"])
    uncached = ask_report(model, images["square"], "--no-cache")
    assert uncached["usage"]["images_encoded"] == cold["usage"]["images_encoded"]
    assert uncached["usage"]["image_cache_hits"] == 0
    assert uncached["text"] == cold["text"]
    assert len(entries(private_smolcli_home)) == cold["usage"]["images_encoded"]


def test_another_image_misses(tiny_pair, images):
    model, _ = tiny_pair
    ask_report(model, images["square"])
    other = ask_report(model, images["wide"])
    assert other["usage"]["image_cache_hits"] == 0 and other["usage"]["images_encoded"] >= 1


def test_another_mmproj_misses(tiny_pair, converted, images):
    ask_report(tiny_pair[0], images["square"])
    q8 = converted("F16", "Q8_0")
    report = ask_report(q8.model, images["square"], "--mmproj", str(q8.mmproj))
    assert report["usage"]["image_cache_hits"] == 0 and report["usage"]["images_encoded"] >= 1


def test_truncated_entry_is_a_miss_and_is_replaced(tiny_pair, images, private_smolcli_home):
    model, _ = tiny_pair
    cold = ask_report(model, images["square"])
    damaged = entries(private_smolcli_home)[0]
    whole = damaged.read_bytes()
    damaged.write_bytes(whole[: len(whole) // 2])

    again = ask_report(model, images["square"])
    assert again["usage"]["images_encoded"] == 1
    assert again["usage"]["image_cache_hits"] == cold["usage"]["images_encoded"] - 1
    assert again["text"] == cold["text"]
    assert damaged.read_bytes() == whole


def test_cache_clear_and_info(tiny_pair, images, private_smolcli_home):
    model, _ = tiny_pair
    tiles = ask_report(model, images["square"])["usage"]["images_encoded"]
    info = CliRunner().invoke(app, ["cache", "info"])
    assert info.exit_code == 0, info.stderr
    assert f"entries: {tiles}\n" in info.stdout
    n_bytes = sum(path.stat().st_size for path in entries(private_smolcli_home))
    assert f"bytes: {n_bytes} " in info.stdout

    cleared = CliRunner().invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0, cleared.stderr
    assert f"removed {tiles} entries" in cleared.stdout
    assert entries(private_smolcli_home) == []
    assert ask_report(model, images["square"])["usage"]["image_cache_hits"] == 0


def test_bad_size_bound_is_one_line_error(monkeypatch):
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    result = CliRunner().invoke(app, ["cache", "info"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"error: {MAX_BYTES_ENV}=") and "unexpected" not in result.stderr


def chat_stats(model, image, *extra: str) -> dict:
    result = CliRunner().invoke(
        app,
        ["chat", "--threads", "1", "-m", str(model), "-i", str(image), "-n", "4", "--stats", *extra],
        input="Describe it.\n",
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stderr.strip().splitlines()[-1])


def test_chat_reuses_what_ask_stored_unless_no_cache(tiny_pair, images):
    model, _ = tiny_pair
    tiles = ask_report(model, images["photo"])["usage"]["images_encoded"]
    warm = chat_stats(model, images["photo"])
    assert (warm["images_encoded"], warm["cache_hits"], warm["cache_misses"]) == (0, tiles, 0)
    uncached = chat_stats(model, images["photo"], "--no-cache")
    assert (uncached["images_encoded"], uncached["cache_hits"], uncached["cache_misses"]) == (tiles, 0, 0)


# --- the store -------------------------------------------------------------------------------


def test_put_then_get_round_trips(tmp_path):
    cache = EmbeddingCache(tmp_path)
    k = key()
    cache.put(k, floats(k))
    got = cache.get(k)
    assert got.dtype == np.float32 and got.flags.writeable
    np.testing.assert_array_equal(got, floats(k))
    assert cache.get(key(tile=1)) is None
    assert cache.get(key(n_embd=16)) is None


def test_lru_eviction_keeps_the_total_under_the_bound(tmp_path):
    k0 = key(tile=0)
    entry_bytes = HEADER.size + 4 * k0.n_tokens * k0.n_embd
    cache = EmbeddingCache(tmp_path, max_bytes=3 * entry_bytes)
    for tile in range(3):
        cache.put(key(tile=tile), floats(key(tile=tile), tile))
    for age, tile in enumerate((0, 1, 2)):  # make the write order visible to mtime-based LRU
        os.utime(tmp_path / key(tile=tile).file_name(), (1000 + age, 1000 + age))
    assert cache.get(key(tile=0)) is not None  # a hit makes tile 0 the most recently used

    cache.put(key(tile=3), floats(key(tile=3), 3))
    entries_now, n_bytes = cache.info()
    assert n_bytes <= cache.max_bytes and entries_now == 3
    assert cache.get(key(tile=1)) is None  # the least recently used went
    assert all(cache.get(key(tile=tile)) is not None for tile in (0, 2, 3))


def test_corrupt_entry_is_a_miss_and_is_removed(tmp_path):
    cache = EmbeddingCache(tmp_path)
    k = key()
    cache.put(k, floats(k))
    path = tmp_path / k.file_name()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one flipped byte
    path.write_bytes(bytes(data))
    assert cache.get(k) is None and not path.exists()


def test_concurrent_writers_leave_one_valid_entry(tmp_path):
    k = key(n_tokens=64, n_embd=256)
    expected = floats(k)
    barrier = threading.Barrier(4)

    def write():
        cache = EmbeddingCache(tmp_path)
        barrier.wait()
        for _ in range(20):
            cache.put(k, expected)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [path.name for path in tmp_path.iterdir()] == [k.file_name()]  # no temp files left
    np.testing.assert_array_equal(EmbeddingCache(tmp_path).get(k), expected)


@pytest.mark.parametrize("size", [0, HEADER.size - 1])
def test_entries_too_short_for_a_header_are_misses(tmp_path, size):
    k = key()
    (tmp_path / k.file_name()).write_bytes(b"\0" * size)
    assert EmbeddingCache(tmp_path).get(k) is None
