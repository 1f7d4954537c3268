"""What the converter writes: metadata mtmd and llama.cpp read, tensor types, vocabulary, name tables."""

from __future__ import annotations

import copy
import json
import shutil
import warnings

import gguf
import pytest
from conftest import NON_WEIGHT_FILES

from smolcli.convert import convert_checkpoint, summary
from smolcli.convert.quantize import tensor_types
from smolcli.models.smolvlm import SMOLVLM
from smolcli.models.smolvlm_shapes import SHAPES
from smolcli.synthetic.random_checkpoint import write_random_checkpoint


def fields(path) -> dict:
    reader = gguf.GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def test_mmproj_metadata_is_what_the_configs_say(converted, numpy_checkpoint):
    result = converted("F16", "Q8_0")
    meta = fields(result.mmproj)
    # the fixtures convert the numpy checkpoint (the transformers re-save converts to the same bytes)
    config = json.loads((numpy_checkpoint("SmolVLM") / "config.json").read_text())
    vision = config["vision_config"]
    assert meta["general.architecture"] == "clip"
    assert meta["clip.projector_type"] == "idefics3"
    assert meta["clip.has_vision_encoder"] is True
    assert meta["clip.vision.projection_dim"] == config["text_config"]["hidden_size"]
    assert meta["clip.vision.image_size"] == vision["image_size"]
    assert meta["clip.vision.patch_size"] == vision["patch_size"]
    assert meta["clip.vision.embedding_length"] == vision["hidden_size"]
    assert meta["clip.vision.feed_forward_length"] == vision["intermediate_size"]
    assert meta["clip.vision.block_count"] == vision["num_hidden_layers"]
    assert meta["clip.vision.attention.head_count"] == vision["num_attention_heads"]
    assert meta["clip.vision.attention.layer_norm_epsilon"] == pytest.approx(vision["layer_norm_eps"])
    assert meta["clip.vision.projector.scale_factor"] == config["scale_factor"]
    assert meta["clip.vision.preproc_image_size"] == SHAPES["tiny"]["longest_edge"]
    assert meta["clip.vision.image_mean"] == pytest.approx([0.5, 0.5, 0.5])
    assert meta["clip.use_gelu"] is True


def test_mmproj_keeps_embeddings_norms_and_biases_f32(converted):
    types = tensor_types(converted("F16", "Q8_0").mmproj)
    for name, (qtype, shape) in types.items():
        if len(shape) == 1 or name in SMOLVLM.vision_f32_tensors:
            assert qtype == "F32", name
        else:
            assert qtype == "Q8_0", name
    assert types["v.patch_embd.weight"][0] == "F32"


def test_language_model_vocabulary_and_template(converted):
    meta = fields(converted("F16", "F16").model)
    tokens = meta["tokenizer.ggml.tokens"]
    kinds = meta["tokenizer.ggml.token_type"]
    assert meta["general.architecture"] == "llama"
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "smollm"
    assert len(tokens) == SHAPES["tiny"]["text"]["vocab_size"]  # padded to the embedding rows
    assert tokens[-1] == f"[PAD{len(tokens) - 1}]" and kinds[-1] == gguf.TokenType.UNUSED
    assert "ĊĊ" in tokens  # "\n\n", which mtmd looks up by text
    assert kinds[tokens.index("<fake_token_around_image>")] == gguf.TokenType.CONTROL
    assert "<end_of_utterance>" in meta["tokenizer.chat_template"]
    assert meta["tokenizer.ggml.add_bos_token"] is False
    eos = tokens[meta["tokenizer.ggml.eos_token_id"]]
    assert eos == "<end_of_utterance>"


def test_chat_template_from_jinja_file(converted):
    meta = fields(converted("F16", "F16", "SmolVLM2").model)
    assert "Assistant:" in meta["tokenizer.chat_template"]


def test_q4_k_m_uses_k_quants(converted):
    result = converted("Q4_K_M", "Q8_0")
    assert {"Q4_K", "Q6_K"} <= set(result.type_counts)
    assert result.fallbacks == {}
    assert tensor_types(result.model)["output_norm.weight"][0] == "F32"


def test_narrow_rows_fall_back_and_are_reported(workdir):
    narrow = copy.deepcopy(SHAPES["tiny"])
    narrow["text"].update(hidden_size=96, intermediate_size=192)  # rows of 96: no 256-wide super-blocks
    source = write_random_checkpoint(workdir / "narrow", narrow)
    result = convert_checkpoint(source, workdir / "narrow-out", "Q4_K_M", "F16")
    assert "blk.0.attn_q.weight" in result.fallbacks
    assert all(qtype not in ("Q4_K", "Q5_K", "Q6_K") for qtype in result.fallbacks.values())
    assert "fell back" in summary(result)


@pytest.mark.parametrize(
    "arch,table", [(gguf.MODEL_ARCH.MMPROJ, SMOLVLM.vision_tensors), (gguf.MODEL_ARCH.LLAMA, SMOLVLM.text_tensors)]
)
def test_name_tables_agree_with_gguf_py(arch, table):
    mapping = gguf.get_tensor_name_map(arch, 4)
    for hf_name, gguf_name in table.items():
        name = hf_name.format(bid=3).replace("text_model.", "")
        assert mapping.get_name(name, try_suffixes=(".weight", ".bias")) == gguf_name.format(bid=3), hf_name


@pytest.mark.parametrize(
    "quant,expected", [("F32", "F32"), ("BF16", "BF16"), ("Q8_0", "Q8_0"), ("Q6_K", "Q6_K"), ("Q5_0", "Q5_0")]
)
def test_quant_types(converted, quant, expected):
    result = converted(quant, "F16")
    assert result.model.name == f"tiny-SmolVLM-{quant}.gguf"
    assert result.type_counts.most_common(1)[0][0] == expected


def test_sharded_checkpoint_converts_like_the_single_file(workdir, numpy_checkpoint):
    import torch
    from transformers import AutoModelForImageTextToText

    source = numpy_checkpoint("SmolVLM", "BF16")
    sharded = workdir / "sharded"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.bfloat16)
        model.save_pretrained(sharded, max_shard_size="300KB")
    for name in NON_WEIGHT_FILES:
        if (source / name).exists():
            shutil.copy(source / name, sharded / name)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 1

    whole = convert_checkpoint(source, workdir / "whole-out", "F16", "F16", name="t")
    split = convert_checkpoint(sharded, workdir / "sharded-out", "F16", "F16", name="t")
    for ours, theirs in ((whole.model, split.model), (whole.mmproj, split.mmproj)):
        a = {t.name: t.data.tobytes() for t in gguf.GGUFReader(ours).tensors}
        b = {t.name: t.data.tobytes() for t in gguf.GGUFReader(theirs).tensors}
        assert a == b
