"""Config quirks of the real SmolVLM and SmolVLM2 releases, resolved as transformers resolves them."""

from __future__ import annotations

import json

import pytest

from smolcli.convert.checkpoint import resolve_preprocessor, resolve_text_config, resolve_vision_config
from smolcli.errors import SmolcliError
from smolcli.models import family_for
from smolcli.models.smolvlm import SMOLVLM


def test_smolvlm2_text_config_without_head_count():
    # SmolVLM2's text_config names VLlama3ForCausalLM and omits num_attention_heads (transformers: 32)
    text = resolve_text_config(
        SMOLVLM, {"architectures": ["VLlama3ForCausalLM"], "hidden_size": 2048, "rope_theta": 130000.0}
    )
    assert text["num_attention_heads"] == 32
    assert text["num_key_value_heads"] == 32
    assert text["head_dim"] == 64
    assert text["rope_theta"] == 130000.0


def test_rope_parameters_of_transformers_5():
    text = resolve_text_config(SMOLVLM, {"rope_parameters": {"rope_type": "default", "rope_theta": 273768.0}})
    assert text["rope_theta"] == 273768.0 and text["rope_type"] == "default"


def test_linear_rope_scaling_is_kept_and_others_refused():
    text = resolve_text_config(SMOLVLM, {"rope_scaling": {"type": "linear", "factor": 2.0}, "rope_theta": 1e4})
    assert text["rope_type"] == "linear" and text["rope_factor"] == 2.0
    with pytest.raises(SmolcliError, match="yarn"):
        resolve_text_config(SMOLVLM, {"rope_parameters": {"rope_type": "yarn", "factor": 4.0}})


def test_null_values_take_the_defaults():
    text = resolve_text_config(
        SMOLVLM, {"num_key_value_heads": None, "head_dim": None, "num_attention_heads": 8, "hidden_size": 512}
    )
    assert text["num_key_value_heads"] == 8 and text["head_dim"] == 64


@pytest.mark.parametrize("model_type", ["idefics3", "smolvlm_vision"])
def test_vision_config_missing_keys(model_type):
    vision = resolve_vision_config(SMOLVLM, {"model_type": model_type, "image_size": 512, "patch_size": 16})
    assert vision["hidden_size"] == 1152 and vision["num_attention_heads"] == 16 and vision["intermediate_size"] == 3072
    assert vision["layer_norm_eps"] == 1e-6  # transformers' default, not llama.cpp's 1e-5 guess


def test_unknown_vision_model_and_text_architecture():
    with pytest.raises(SmolcliError, match="siglip_vision_model"):
        resolve_vision_config(SMOLVLM, {"model_type": "siglip_vision_model"})
    with pytest.raises(SmolcliError, match="MistralForCausalLM"):
        resolve_text_config(SMOLVLM, {"architectures": ["MistralForCausalLM"]})


def test_preprocessor_merges_processor_config(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"size": {"longest_edge": 1536}, "image_mean": [0.5] * 3})
    )
    (tmp_path / "processor_config.json").write_text(
        json.dumps(
            {"image_seq_len": 81, "image_processor": {"max_image_size": {"longest_edge": 384}, "image_std": [0.25] * 3}}
        )
    )
    merged = resolve_preprocessor(SMOLVLM, tmp_path, {"image_size": 384})
    assert merged["longest_edge"] == 1536 and merged["tile_size"] == 384
    assert merged["image_std"] == [0.25] * 3 and merged["image_seq_len"] == 81


def test_tile_size_must_match_the_encoder(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"max_image_size": {"longest_edge": 364}}))
    with pytest.raises(SmolcliError, match="364"):
        resolve_preprocessor(SMOLVLM, tmp_path, {"image_size": 384})


def test_family_lookup():
    assert family_for("SmolVLMForConditionalGeneration") is SMOLVLM
    with pytest.raises(SmolcliError, match="Idefics3ForConditionalGeneration"):
        family_for("Qwen2VLForConditionalGeneration")
