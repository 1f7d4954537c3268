"""SmolVLMPredictor on a real local Ray (2 CPUs, 2 actors): answers equal the library's, bad rows are data."""

from __future__ import annotations

import numpy as np
import pytest

import smolcli
from smolcli.plugins.ray_predictor import SmolVLMPredictor

ray = pytest.importorskip("ray")
MAX_TOKENS = 6
PROMPTS = ("Describe it.", "What colour dominates?", "Count the shapes.")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def rows(images, tmp_path) -> list[dict]:
    """A few dozen rows of encoded images (a column of one type, as Arrow keeps it), and two bad rows."""
    made = []
    keys = sorted(images)
    for i in range(30):
        path = images[keys[i % len(keys)]]
        made.append({"id": i, "image": path.read_bytes(), "prompt": PROMPTS[i % len(PROMPTS)]})
    made[7]["image"] = made[7]["image"][:40]  # cut short
    made[19]["image"] = b"not an image at all"
    return made


def test_actors_answer_as_the_library_does_and_bad_rows_are_errors(local_ray, tiny_pair, images, tmp_path):
    items = rows(images, tmp_path)
    settings = {"max_tokens": MAX_TOKENS, "ignore_eos": True}
    answered = (
        ray.data.from_items(items)
        .map_batches(
            SmolVLMPredictor,
            fn_constructor_kwargs={"model": str(tiny_pair[0]), "load": {"threads": 1}, **settings},
            concurrency=2,
            batch_size=8,
            num_cpus=1,
        )
        .take_all()
    )
    by_id = {row["id"]: row for row in answered}
    assert sorted(by_id) == list(range(len(items)))
    with smolcli.load(tiny_pair[0], threads=1) as model:
        for item in items:
            row = by_id[item["id"]]
            if item["id"] in (7, 19):
                assert row["text"] is None and row["usage"] is None
                assert row["error"] and "\n" not in row["error"], row["error"]
                continue
            direct = model.ask(item["prompt"], [item["image"]], **settings)
            assert row["error"] is None, row["error"]
            assert row["text"] == direct.text and row["finish_reason"] == "length"
            assert row["usage"]["completion_tokens"] == MAX_TOKENS and row["usage"]["image_tokens"] > 0
    assert "not an image" in by_id[19]["error"]


def test_unknown_settings_are_refused():
    with pytest.raises(TypeError, match="unknown settings max_tiles"):
        SmolVLMPredictor("unused", max_tiles=4)


def test_a_batch_without_a_prompt_column_uses_the_prompt_given(tiny_pair, images):
    """Called as Ray calls it, without Ray: paths, a row without an image, and a missing file."""
    predictor = SmolVLMPredictor(str(tiny_pair[0]), prompt="Describe it.", max_tokens=4, ignore_eos=True)
    missing = str(images["square"].with_name("missing.png"))
    batch = {"image": np.array([str(images["square"]), None, missing], dtype=object)}
    out = predictor(batch)
    with smolcli.load(tiny_pair[0]) as model:
        assert out["text"][0] == model.ask("Describe it.", [images["square"]], max_tokens=4, ignore_eos=True).text
        assert out["text"][1] == model.ask("Describe it.", max_tokens=4, ignore_eos=True).text
    assert list(out["error"][:2]) == [None, None]
    assert "missing.png" in out["error"][2] and out["text"][2] is None
    predictor.model.close()


def test_a_store_prefix_column_keeps_a_rows_prefix_state_out_of_the_cache(tiny_pair, images, private_smolcli_home):
    """Called as Ray calls it: False reads the prefix cache but writes nothing, True (or no column) stores."""
    predictor = SmolVLMPredictor(str(tiny_pair[0]), prompt="Describe it.", max_tokens=2, load={"threads": 1})
    states = private_smolcli_home / "prefixes"
    photo = np.array([images["photo"].read_bytes()], dtype=object)
    unstored = predictor({"image": photo, "store_prefix": np.array([False])})
    assert unstored["error"][0] is None and list(states.glob("*.kv")) == []
    stored = predictor({"image": photo, "store_prefix": np.array([True])})
    assert len(list(states.glob("*.kv"))) == 1 and stored["text"][0] == unstored["text"][0]
    restored = predictor({"image": photo})  # no column: stored as Model.ask does, here read back
    assert restored["usage"][0]["images_encoded"] == 0 and restored["usage"][0]["image_cache_hits"] == 0
    predictor.model.close()
