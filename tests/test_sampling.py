"""Greedy sampling without a grammar is an argmax on the logits in place (no copy into llama.cpp's candidates
array): it must choose what llama.cpp's own greedy stage chooses, ties and non-finite logits included."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest

from smolcli.runtime.decoding.sampling import TOKEN_DATA, Sampler, SamplingOptions

N_VOCAB = 49152  # SmolVLM's vocabulary


def llama_greedy(logits: np.ndarray) -> int:
    """llama.cpp's greedy stage, alone, over the logits."""
    stage = llama_cpp.llama_sampler_init_greedy()
    try:
        candidates = np.zeros(len(logits), dtype=TOKEN_DATA)
        candidates["id"] = np.arange(len(logits))
        candidates["logit"] = logits
        data = candidates.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
        array = llama_cpp.llama_token_data_array(data, len(candidates), -1, False)
        llama_cpp.llama_sampler_apply(stage, ctypes.byref(array))
        return int(array.data[array.selected].id)
    finally:
        llama_cpp.llama_sampler_free(stage)


def random_logits(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 4, N_VOCAB).astype(np.float32)


def tied(seed: int) -> np.ndarray:
    logits = random_logits(seed)
    logits[[40000, 123, 9000]] = logits.max() + 1  # equal maxima: the first wins
    return logits


def with_infinities(seed: int) -> np.ndarray:
    logits = random_logits(seed)
    logits[::3] = -np.inf  # masked tokens, as a bias or a guard leaves them
    return logits


def with_nan(seed: int) -> np.ndarray:
    logits = random_logits(seed)
    logits[[5, 777]] = np.nan  # argmax would pick a NaN: the chain decides instead
    return logits


@pytest.mark.parametrize("make", [random_logits, tied, with_infinities, with_nan])
def test_greedy_chooses_what_llama_cpps_greedy_stage_chooses(make):
    with Sampler(SamplingOptions(temperature=0.0)) as sampler:
        for seed in range(4):
            logits = make(seed)
            before = logits.copy()
            assert sampler.sample(logits) == llama_greedy(logits)
            np.testing.assert_array_equal(logits, before)  # read, never written
    assert llama_greedy(tied(0)) == 123
