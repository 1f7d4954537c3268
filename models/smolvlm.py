"""SmolVLM and SmolVLM2 (the Idefics3 layout), declared once.

What the converter and the runtime need to know about the family: which
checkpoint architectures belong to it, the defaults for keys that released
configs leave out, how Hugging Face tensor names map to llama.cpp's, the
shapes each tensor must have, and the prompt format: all gathered in SMOLVLM at the end.
"""

from __future__ import annotations

from gguf import MODEL_TENSOR

from smolcli.models.family import ModelFamily, tensor_name

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

# Hugging Face name -> GGUF name (gguf's TENSOR_NAMES); "{bid}" is the block index. ROTARY_PERMUTED marks
# the attention projections whose rows llama.cpp wants in interleaved rotary order.
TEXT_TENSORS = {
    "model.text_model.embed_tokens.weight": tensor_name(MODEL_TENSOR.TOKEN_EMBD),
    "model.text_model.norm.weight": tensor_name(MODEL_TENSOR.OUTPUT_NORM),
    "lm_head.weight": tensor_name(MODEL_TENSOR.OUTPUT),
    "model.text_model.layers.{bid}.input_layernorm.weight": tensor_name(MODEL_TENSOR.ATTN_NORM),
    "model.text_model.layers.{bid}.self_attn.q_proj.weight": tensor_name(MODEL_TENSOR.ATTN_Q),
    "model.text_model.layers.{bid}.self_attn.k_proj.weight": tensor_name(MODEL_TENSOR.ATTN_K),
    "model.text_model.layers.{bid}.self_attn.v_proj.weight": tensor_name(MODEL_TENSOR.ATTN_V),
    "model.text_model.layers.{bid}.self_attn.o_proj.weight": tensor_name(MODEL_TENSOR.ATTN_OUT),
    "model.text_model.layers.{bid}.post_attention_layernorm.weight": tensor_name(MODEL_TENSOR.FFN_NORM),
    "model.text_model.layers.{bid}.mlp.gate_proj.weight": tensor_name(MODEL_TENSOR.FFN_GATE),
    "model.text_model.layers.{bid}.mlp.up_proj.weight": tensor_name(MODEL_TENSOR.FFN_UP),
    "model.text_model.layers.{bid}.mlp.down_proj.weight": tensor_name(MODEL_TENSOR.FFN_DOWN),
}
ROTARY_PERMUTED = {tensor_name(MODEL_TENSOR.ATTN_Q): "q", tensor_name(MODEL_TENSOR.ATTN_K): "k"}

VISION_TENSORS = {
    "model.vision_model.embeddings.patch_embedding.weight": tensor_name(MODEL_TENSOR.V_ENC_EMBD_PATCH),
    "model.vision_model.embeddings.patch_embedding.bias": tensor_name(MODEL_TENSOR.V_ENC_EMBD_PATCH, "bias"),
    "model.vision_model.embeddings.position_embedding.weight": tensor_name(MODEL_TENSOR.V_ENC_EMBD_POS),
    "model.vision_model.encoder.layers.{bid}.self_attn.q_proj.weight": tensor_name(MODEL_TENSOR.V_ENC_ATTN_Q),
    "model.vision_model.encoder.layers.{bid}.self_attn.q_proj.bias": tensor_name(MODEL_TENSOR.V_ENC_ATTN_Q, "bias"),
    "model.vision_model.encoder.layers.{bid}.self_attn.k_proj.weight": tensor_name(MODEL_TENSOR.V_ENC_ATTN_K),
    "model.vision_model.encoder.layers.{bid}.self_attn.k_proj.bias": tensor_name(MODEL_TENSOR.V_ENC_ATTN_K, "bias"),
    "model.vision_model.encoder.layers.{bid}.self_attn.v_proj.weight": tensor_name(MODEL_TENSOR.V_ENC_ATTN_V),
    "model.vision_model.encoder.layers.{bid}.self_attn.v_proj.bias": tensor_name(MODEL_TENSOR.V_ENC_ATTN_V, "bias"),
    "model.vision_model.encoder.layers.{bid}.self_attn.out_proj.weight": tensor_name(MODEL_TENSOR.V_ENC_ATTN_O),
    "model.vision_model.encoder.layers.{bid}.self_attn.out_proj.bias": tensor_name(MODEL_TENSOR.V_ENC_ATTN_O, "bias"),
    "model.vision_model.encoder.layers.{bid}.layer_norm1.weight": tensor_name(MODEL_TENSOR.V_ENC_INPUT_NORM),
    "model.vision_model.encoder.layers.{bid}.layer_norm1.bias": tensor_name(MODEL_TENSOR.V_ENC_INPUT_NORM, "bias"),
    "model.vision_model.encoder.layers.{bid}.layer_norm2.weight": tensor_name(MODEL_TENSOR.V_ENC_POST_ATTN_NORM),
    "model.vision_model.encoder.layers.{bid}.layer_norm2.bias": tensor_name(MODEL_TENSOR.V_ENC_POST_ATTN_NORM, "bias"),
    "model.vision_model.encoder.layers.{bid}.mlp.fc1.weight": tensor_name(MODEL_TENSOR.V_ENC_FFN_UP),
    "model.vision_model.encoder.layers.{bid}.mlp.fc1.bias": tensor_name(MODEL_TENSOR.V_ENC_FFN_UP, "bias"),
    "model.vision_model.encoder.layers.{bid}.mlp.fc2.weight": tensor_name(MODEL_TENSOR.V_ENC_FFN_DOWN),
    "model.vision_model.encoder.layers.{bid}.mlp.fc2.bias": tensor_name(MODEL_TENSOR.V_ENC_FFN_DOWN, "bias"),
    "model.vision_model.post_layernorm.weight": tensor_name(MODEL_TENSOR.V_POST_NORM),
    "model.vision_model.post_layernorm.bias": tensor_name(MODEL_TENSOR.V_POST_NORM, "bias"),
    "model.connector.modality_projection.proj.weight": tensor_name(MODEL_TENSOR.V_MMPROJ_FC),
}
# The patch convolution and the learned positions feed every token: mtmd keeps them F32.
VISION_F32_TENSORS = (tensor_name(MODEL_TENSOR.V_ENC_EMBD_PATCH), tensor_name(MODEL_TENSOR.V_ENC_EMBD_POS))

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


def render_prompt(turns: list[tuple[str, str]], system: str | None = None) -> str:
    """The Instruct chat format: turns are (role, text) with images as `<image>` markers."""
    text = "<|im_start|>"
    if system:
        text += f"System: {system}{END_OF_UTTERANCE}\n"
    for role, content in turns:
        separator = ":" if content.startswith(IMAGE_MARKER) else ": "
        text += f"{role.capitalize()}{separator}{content}{END_OF_UTTERANCE}\n"
    return text + "Assistant:"


SMOLVLM = ModelFamily(
    name=FAMILY,
    architectures=ARCHITECTURES,
    vision_model_types=VISION_MODEL_TYPES,
    text_architectures=TEXT_ARCHITECTURES,
    top_defaults=TOP_DEFAULTS,
    vision_defaults=VISION_DEFAULTS,
    text_defaults=TEXT_DEFAULTS,
    preprocessor_defaults=PREPROCESSOR_DEFAULTS,
    text_tensors=TEXT_TENSORS,
    rotary_permuted=ROTARY_PERMUTED,
    vision_tensors=VISION_TENSORS,
    vision_f32_tensors=VISION_F32_TENSORS,
    ignored_tensor_suffixes=IGNORED_TENSOR_SUFFIXES,
    text_shapes=text_shapes,
    vision_shapes=vision_shapes,
    pre_tokenizers=PRE_TOKENIZERS,
    image_marker=IMAGE_MARKER,
    end_of_utterance=END_OF_UTTERANCE,
    render_prompt=render_prompt,
)
