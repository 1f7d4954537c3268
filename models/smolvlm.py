"""SmolVLM and SmolVLM2 (the Idefics3 layout), declared once.

What the converter and the runtime need to know about the family: which
checkpoint architectures belong to it, the defaults for keys that released
configs leave out, how Hugging Face tensor names map to llama.cpp's, the
shapes each tensor must have, and the prompt format.
"""

from __future__ import annotations

FAMILY = "smolvlm"

# config.json "architectures" -> release generation.
ARCHITECTURES = {
    "Idefics3ForConditionalGeneration": "SmolVLM",
    "SmolVLMForConditionalGeneration": "SmolVLM2",
}

VISION_MODEL_TYPES = ("idefics3", "idefics3_vision", "smolvlm_vision")
TEXT_ARCHITECTURES = ("LlamaForCausalLM", "VLlama3ForCausalLM", None)

# Values transformers falls back to when a key is absent (SmolVLM2 configs omit several).
TOP_DEFAULTS = {"scale_factor": 2, "image_token_id": 128257, "tie_word_embeddings": False}
VISION_DEFAULTS = {
    "hidden_size": 1152,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu_pytorch_tanh",
}
TEXT_DEFAULTS = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
}
PREPROCESSOR_DEFAULTS = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}

# Hugging Face name -> GGUF name; "{bid}" is the block index. "permute" marks the
# attention projections whose rows llama.cpp wants in interleaved rotary order.
TEXT_PREFIX = "model.text_model."
TEXT_TENSORS = {
    "model.text_model.embed_tokens.weight": "token_embd.weight",
    "model.text_model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.text_model.layers.{bid}.input_layernorm.weight": "blk.{bid}.attn_norm.weight",
    "model.text_model.layers.{bid}.self_attn.q_proj.weight": "blk.{bid}.attn_q.weight",
    "model.text_model.layers.{bid}.self_attn.k_proj.weight": "blk.{bid}.attn_k.weight",
    "model.text_model.layers.{bid}.self_attn.v_proj.weight": "blk.{bid}.attn_v.weight",
    "model.text_model.layers.{bid}.self_attn.o_proj.weight": "blk.{bid}.attn_output.weight",
    "model.text_model.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.ffn_norm.weight",
    "model.text_model.layers.{bid}.mlp.gate_proj.weight": "blk.{bid}.ffn_gate.weight",
    "model.text_model.layers.{bid}.mlp.up_proj.weight": "blk.{bid}.ffn_up.weight",
    "model.text_model.layers.{bid}.mlp.down_proj.weight": "blk.{bid}.ffn_down.weight",
}
ROTARY_PERMUTED = {"blk.{bid}.attn_q.weight": "q", "blk.{bid}.attn_k.weight": "k"}

VISION_TENSORS = {
    "model.vision_model.embeddings.patch_embedding.weight": "v.patch_embd.weight",
    "model.vision_model.embeddings.patch_embedding.bias": "v.patch_embd.bias",
    "model.vision_model.embeddings.position_embedding.weight": "v.position_embd.weight",
    "model.vision_model.encoder.layers.{bid}.self_attn.q_proj.weight": "v.blk.{bid}.attn_q.weight",
    "model.vision_model.encoder.layers.{bid}.self_attn.q_proj.bias": "v.blk.{bid}.attn_q.bias",
    "model.vision_model.encoder.layers.{bid}.self_attn.k_proj.weight": "v.blk.{bid}.attn_k.weight",
    "model.vision_model.encoder.layers.{bid}.self_attn.k_proj.bias": "v.blk.{bid}.attn_k.bias",
    "model.vision_model.encoder.layers.{bid}.self_attn.v_proj.weight": "v.blk.{bid}.attn_v.weight",
    "model.vision_model.encoder.layers.{bid}.self_attn.v_proj.bias": "v.blk.{bid}.attn_v.bias",
    "model.vision_model.encoder.layers.{bid}.self_attn.out_proj.weight": "v.blk.{bid}.attn_out.weight",
    "model.vision_model.encoder.layers.{bid}.self_attn.out_proj.bias": "v.blk.{bid}.attn_out.bias",
    "model.vision_model.encoder.layers.{bid}.layer_norm1.weight": "v.blk.{bid}.ln1.weight",
    "model.vision_model.encoder.layers.{bid}.layer_norm1.bias": "v.blk.{bid}.ln1.bias",
    "model.vision_model.encoder.layers.{bid}.layer_norm2.weight": "v.blk.{bid}.ln2.weight",
    "model.vision_model.encoder.layers.{bid}.layer_norm2.bias": "v.blk.{bid}.ln2.bias",
    "model.vision_model.encoder.layers.{bid}.mlp.fc1.weight": "v.blk.{bid}.ffn_up.weight",
    "model.vision_model.encoder.layers.{bid}.mlp.fc1.bias": "v.blk.{bid}.ffn_up.bias",
    "model.vision_model.encoder.layers.{bid}.mlp.fc2.weight": "v.blk.{bid}.ffn_down.weight",
    "model.vision_model.encoder.layers.{bid}.mlp.fc2.bias": "v.blk.{bid}.ffn_down.bias",
    "model.vision_model.post_layernorm.weight": "v.post_ln.weight",
    "model.vision_model.post_layernorm.bias": "v.post_ln.bias",
    "model.connector.modality_projection.proj.weight": "mm.model.fc.weight",
}
# The patch convolution and the learned positions feed every token: mtmd keeps them F32.
VISION_F32_TENSORS = ("v.patch_embd.weight", "v.position_embd.weight")

# Tensors present in some checkpoints that carry no weights.
IGNORED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)


def text_shapes(text: dict) -> dict[str, tuple[int, ...]]:
    """Expected Hugging Face shapes (row-major, as stored) of the text model's tensors."""
    hidden, heads, kv_heads = text["hidden_size"], text["num_attention_heads"], text["num_key_value_heads"]
    head_dim = text["head_dim"]
    return {
        "model.text_model.embed_tokens.weight": (text["vocab_size"], hidden),
        "model.text_model.norm.weight": (hidden,),
        "lm_head.weight": (text["vocab_size"], hidden),
        "model.text_model.layers.{bid}.input_layernorm.weight": (hidden,),
        "model.text_model.layers.{bid}.self_attn.q_proj.weight": (heads * head_dim, hidden),
        "model.text_model.layers.{bid}.self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
        "model.text_model.layers.{bid}.self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
        "model.text_model.layers.{bid}.self_attn.o_proj.weight": (hidden, heads * head_dim),
        "model.text_model.layers.{bid}.post_attention_layernorm.weight": (hidden,),
        "model.text_model.layers.{bid}.mlp.gate_proj.weight": (text["intermediate_size"], hidden),
        "model.text_model.layers.{bid}.mlp.up_proj.weight": (text["intermediate_size"], hidden),
        "model.text_model.layers.{bid}.mlp.down_proj.weight": (hidden, text["intermediate_size"]),
    }


def vision_shapes(vision: dict, scale_factor: int, text_hidden: int) -> dict[str, tuple[int, ...]]:
    width, ffn, patch = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]
    positions = (vision["image_size"] // patch) ** 2
    shapes = {
        "model.vision_model.embeddings.patch_embedding.weight": (width, vision["num_channels"], patch, patch),
        "model.vision_model.embeddings.patch_embedding.bias": (width,),
        "model.vision_model.embeddings.position_embedding.weight": (positions, width),
        "model.vision_model.post_layernorm.weight": (width,),
        "model.vision_model.post_layernorm.bias": (width,),
        "model.connector.modality_projection.proj.weight": (text_hidden, width * scale_factor**2),
    }
    block = "model.vision_model.encoder.layers.{bid}."
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        shapes[f"{block}self_attn.{proj}.weight"] = (width, width)
        shapes[f"{block}self_attn.{proj}.bias"] = (width,)
    for norm in ("layer_norm1", "layer_norm2"):
        shapes[f"{block}{norm}.weight"] = (width,)
        shapes[f"{block}{norm}.bias"] = (width,)
    shapes[f"{block}mlp.fc1.weight"] = (ffn, width)
    shapes[f"{block}mlp.fc1.bias"] = (ffn,)
    shapes[f"{block}mlp.fc2.weight"] = (width, ffn)
    shapes[f"{block}mlp.fc2.bias"] = (width,)
    return shapes


# Pre-tokenizers llama.cpp implements, keyed by the tokenizer.json definition that
# produces the same splits. SmolLM2 (the text model of every release) is "smollm".
PRE_TOKENIZERS = {
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        ],
    },
    "gpt-2": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
}

# Prompt format of the Instruct releases (the chat template renders the same text).
IMAGE_MARKER = "<image>"
END_OF_UTTERANCE = "<end_of_utterance>"
IMAGE_TOKENS = ("<fake_token_around_image>", "<image>", "<global-img>")


def render_prompt(turns: list[tuple[str, str]], system: str | None = None) -> str:
    """The Instruct chat format: turns are (role, text) with images as `<image>` markers."""
    text = "<|im_start|>"
    if system:
        text += f"System: {system}{END_OF_UTTERANCE}\n"
    for role, content in turns:
        separator = ":" if content.startswith(IMAGE_MARKER) else ": "
        text += f"{role.capitalize()}{separator}{content}{END_OF_UTTERANCE}\n"
    return text + "Assistant:"
