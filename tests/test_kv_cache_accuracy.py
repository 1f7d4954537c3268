"""What a quantized KV cache costs against transformers: q8_0 barely measurable, q4_0 clearly so (why f16 stays the default)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SOURCE_DTYPES

from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.vision.images import load_image

from reference import Run, TransformersReference, cosine, max_abs_diff

pytestmark = pytest.mark.reference  # against transformers/torch: the slow lane

PROMPT = "<|im_start|>User:<image>What is in the picture?<end_of_utterance>\nAssistant:"


@pytest.fixture(scope="module")
def logits_by_cache(hf_checkpoint, converted, images):
    reference = TransformersReference(hf_checkpoint("SmolVLM", SOURCE_DTYPES["SmolVLM"])).run(PROMPT, [images["photo"]])
    pair = converted("F32", "F32")
    found = {}
    for cache in ("f16", "q8_0", "q4_0"):
        with Engine(resolve_model_files(pair.model, pair.mmproj), EngineOptions(threads=1, cache_type=cache)) as engine:
            context = engine.new_context(1024)
            prompt = engine.tokenize(PROMPT, [load_image(images["photo"])])
            engine.evaluate(prompt, context)
            prompt.free()
            found[cache] = Run(reference.token_ids, context.last_logits())
    return reference, found


def test_a_q8_0_cache_stays_within_the_f32_bound(logits_by_cache):
    reference, found = logits_by_cache
    f16, q8 = max_abs_diff(reference, found["f16"]), max_abs_diff(reference, found["q8_0"])
    assert f16 < 5e-3 and q8 < 1e-2  # measured: 0.0025 and 0.0070 with logits up to 2.8
    assert np.argmax(found["q8_0"].logits[: len(reference.logits)]) == np.argmax(reference.logits)


def test_a_q4_0_cache_costs_visibly_more(logits_by_cache):
    reference, found = logits_by_cache
    q4 = max_abs_diff(reference, found["q4_0"])
    assert q4 > 2 * max_abs_diff(reference, found["q8_0"])  # measured: 0.11 against 0.007
    assert cosine(reference, found["q4_0"]) > 0.99
