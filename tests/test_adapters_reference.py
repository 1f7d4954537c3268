"""PEFT adapters, merged by `convert --adapter` and applied at run time by `--lora`, against transformers + PEFT.

Each adapter is made by peft itself on the tiny checkpoints transformers saved, with its B (and DoRA's
magnitude) randomized: PEFT's default init makes B zero, an adapter that changes nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import SOURCE_DTYPES

import smolcli
from smolcli.convert import convert_checkpoint
from smolcli.convert.lora_adapter import convert_adapter
from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.engine import Engine

from reference import GGUFRun, TransformersReference, engine_options, max_abs_diff

pytestmark = pytest.mark.reference

TEXT_PROMPT = "<|im_start|>User: What is in the picture?<end_of_utterance>\nAssistant:"
IMAGE_PROMPT = "<|im_start|>User:<image>What is in the picture?<end_of_utterance>\nAssistant:"
F32_BOUND = 5e-3
TEXT_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
OFFICIAL = ["down_proj", "o_proj", "k_proj", "q_proj", "gate_proj", "up_proj", "v_proj"]  # also SigLIP's q/k/v
# name -> (LoraConfig arguments, whether the adapter reaches the vision side, runs as a llama.cpp LoRA)
CASES = {
    # a regular expression: the text model's projections only
    "text": (dict(r=8, lora_alpha=16, target_modules=r".*text_model.*\.(" + "|".join(TEXT_MODULES) + ")"), False, True),
    "vision": (dict(r=8, lora_alpha=16, target_modules=OFFICIAL + ["out_proj", "fc1", "fc2", "proj"]), True, True),
    # the official fine-tuning notebook's config
    "dora": (dict(r=8, lora_alpha=8, target_modules=OFFICIAL, use_dora=True), True, False),
    "rslora": (
        dict(
            r=16,
            lora_alpha=8,
            target_modules=["o_proj", "down_proj"],
            use_rslora=True,
            rank_pattern={"down_proj": 4},
            alpha_pattern={"down_proj": 3},
        ),
        False,
        True,
    ),
    "saved": (dict(r=4, lora_alpha=8, target_modules=["gate_proj"], modules_to_save=["lm_head"]), False, False),
    # 5 divides neither 256 nor 512
    "odd_rank": (dict(r=5, lora_alpha=10, target_modules=["gate_proj", "o_proj"]), False, True),
    "second": (dict(r=4, lora_alpha=8, target_modules=["up_proj", "down_proj", "o_proj"]), False, True),
}
GENERATIONS = ["SmolVLM", "SmolVLM2"]


def make_peft_adapter(base: Path, target: Path, config: dict, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
        peft_model = get_peft_model(model, LoraConfig(init_lora_weights="gaussian", **config))
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0.0, 0.05)
                elif "lora_magnitude_vector" in name or "modules_to_save" in name:
                    parameter.mul_(1.0 + 0.2 * torch.randn_like(parameter))
        peft_model.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def adapters(workdir, hf_checkpoint):
    made = {}

    def get(generation: str, case: str) -> Path:
        if (generation, case) not in made:
            base = hf_checkpoint(generation, SOURCE_DTYPES[generation])
            target = workdir / "adapters" / generation / case
            made[generation, case] = make_peft_adapter(base, target, CASES[case][0], seed=len(made))
        return made[generation, case]

    return get


class PeftReference(TransformersReference):
    """transformers with one PEFT adapter loaded (or several, combined as PEFT's weighted adapters do)."""

    def __init__(self, base: Path, adapter_dirs: list[Path], weights: list[float] | None = None):
        from peft import PeftModel

        super().__init__(base)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = PeftModel.from_pretrained(self.model, adapter_dirs[0], adapter_name="a0")
            for index, folder in enumerate(adapter_dirs[1:], 1):
                model.load_adapter(folder, adapter_name=f"a{index}")
            if weights is not None:
                names = [f"a{i}" for i in range(len(adapter_dirs))]
                model.add_weighted_adapter(names, weights, "mix", combination_type="cat")
                model.set_adapter("mix")
        self.model = model.eval()


@pytest.fixture(scope="session")
def base_pairs(workdir, hf_checkpoint):
    made = {}

    def get(generation: str, quant: str = "F32"):
        if (generation, quant) not in made:
            source = hf_checkpoint(generation, SOURCE_DTYPES[generation])
            made[generation, quant] = convert_checkpoint(
                source, workdir / "adapter-bases" / f"{generation}-{quant}", quant, quant, name="base"
            )
        return made[generation, quant]

    return get


class LoraRun(GGUFRun):
    def __init__(self, model: Path, mmproj: Path, image_token_id: int, lora=()):
        self.engine = Engine(resolve_model_files(model, mmproj), engine_options(threads=2, lora=tuple(lora)))
        self.context = self.engine.new_context(2048)
        self.image_token_id = image_token_id


def prompt_for(case: str, images) -> tuple[str, list[Path]]:
    return (IMAGE_PROMPT, [images["square"]]) if CASES[case][1] else (TEXT_PROMPT, [])


def run_once(run: GGUFRun, prompt, paths):
    try:
        return run.run(prompt, paths)
    finally:
        run.close()


@pytest.mark.parametrize("generation", GENERATIONS)
@pytest.mark.parametrize("case", ["text", "vision", "dora", "rslora", "saved", "odd_rank"])
def test_merged_pair_matches_peft(generation, case, adapters, hf_checkpoint, base_pairs, images, workdir):
    base = hf_checkpoint(generation, SOURCE_DTYPES[generation])
    folder = adapters(generation, case)
    prompt, paths = prompt_for(case, images)
    reference = PeftReference(base, [folder])
    expected = reference.run(prompt, paths)
    untouched = run_once(LoraRun(base_pairs(generation).model, base_pairs(generation).mmproj, 0), prompt, paths)
    assert np.abs(expected.logits - untouched.logits[: expected.logits.shape[0]]).max() > 0.1, "the adapter is inert"

    merged = convert_checkpoint(base, workdir / "merged" / generation / case, "F32", "F32", name="t", adapter=folder)
    assert merged.model.name == f"t-{case}-F32.gguf" and merged.mmproj.name == f"mmproj-t-{case}-F32.gguf"
    ours = run_once(GGUFRun(merged.model, merged.mmproj, reference.image_token_id), prompt, paths)
    assert ours.token_ids == expected.token_ids
    assert max_abs_diff(expected, ours) <= F32_BOUND


@pytest.mark.parametrize("generation", GENERATIONS)
@pytest.mark.parametrize("case", ["text", "vision", "rslora", "odd_rank"])
def test_runtime_lora_matches_peft(generation, case, adapters, hf_checkpoint, base_pairs, images, workdir):
    base = hf_checkpoint(generation, SOURCE_DTYPES[generation])
    folder = adapters(generation, case)
    prompt, paths = prompt_for(case, images)
    expected = PeftReference(base, [folder]).run(prompt, paths)

    written = convert_adapter(folder, base, workdir / "lora" / generation / case, "F32", "F32")
    assert (written.mmproj is not None) == CASES[case][1]  # the merged mmproj exactly when vision is adapted
    pair = base_pairs(generation)
    # the library: load(..., lora=[...]) takes the adapter's merged mmproj when it has one
    with smolcli.load(pair.model, lora=[f"{written.adapter}:1"], embedding_cache=False, threads=2) as model:
        vision = model.files.mmproj.path if model.files.mmproj else pair.mmproj
        assert vision == (written.mmproj or pair.mmproj)
    ours = run_once(LoraRun(pair.model, vision, 0, [(str(written.adapter), 1.0)]), prompt, paths)
    assert max_abs_diff(expected, ours) <= F32_BOUND


@pytest.mark.parametrize("generation", ["SmolVLM"])
def test_q8_0_keeps_the_top_token(generation, adapters, hf_checkpoint, base_pairs, images, workdir):
    base = hf_checkpoint(generation, SOURCE_DTYPES[generation])
    folder = adapters(generation, "vision")
    prompt, paths = prompt_for("vision", images)
    expected = PeftReference(base, [folder]).run(prompt, paths)
    merged = convert_checkpoint(base, workdir / "merged-q8" / generation, "Q8_0", "Q8_0", name="t", adapter=folder)
    ours = run_once(GGUFRun(merged.model, merged.mmproj, 0), prompt, paths)
    n = expected.logits.shape[0]
    assert int(np.argmax(ours.logits[:n])) == int(np.argmax(expected.logits))

    written = convert_adapter(folder, base, workdir / "lora-q8" / generation, "Q8_0", "Q8_0")
    pair = base_pairs(generation, "Q8_0")
    runtime = run_once(LoraRun(pair.model, written.mmproj, 0, [(str(written.adapter), 1.0)]), prompt, paths)
    assert int(np.argmax(runtime.logits[:n])) == int(np.argmax(expected.logits))


def test_scale_zero_is_the_base_and_two_adapters_stack_as_peft_cat(adapters, hf_checkpoint, base_pairs, workdir):
    generation = "SmolVLM"
    base = hf_checkpoint(generation, SOURCE_DTYPES[generation])
    first, second = adapters(generation, "odd_rank"), adapters(generation, "second")
    pair = base_pairs(generation)
    a = convert_adapter(first, base, workdir / "stack", "F32").adapter
    b = convert_adapter(second, base, workdir / "stack", "F32").adapter

    plain = run_once(LoraRun(pair.model, pair.mmproj, 0), TEXT_PROMPT, [])
    zero = run_once(LoraRun(pair.model, pair.mmproj, 0, [(str(a), 0.0)]), TEXT_PROMPT, [])
    assert np.array_equal(plain.logits, zero.logits)

    expected = PeftReference(base, [first, second], weights=[0.7, 0.4]).run(TEXT_PROMPT, [])
    stacked = run_once(LoraRun(pair.model, pair.mmproj, 0, [(str(a), 0.7), (str(b), 0.4)]), TEXT_PROMPT, [])
    assert max_abs_diff(expected, stacked) <= F32_BOUND
    assert np.abs(expected.logits - plain.logits[: expected.logits.shape[0]]).max() > 0.1
