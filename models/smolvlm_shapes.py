"""Dimensions of the released SmolVLM checkpoints, and a tiny one for tests and the offline demo.

Each entry is what config.json, preprocessor_config.json and processor_config.json
say for that release, so random checkpoints in these shapes stand in for the real
weights in benchmarks.
"""

from __future__ import annotations

# the 93M-parameter SigLIP encoder (patch 16, 512 px) that the 256M and 500M releases share
SIGLIP_B16_512 = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 512,
    "patch_size": 16,
    "layer_norm_eps": 1e-6,
}

SHAPES: dict[str, dict] = {
    # 256 wide so that K-quants apply as they do to the 2.2B model
    "tiny": {
        "text": {
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 384,
            "max_position_embeddings": 4096,
            "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5,
        },
        "vision": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 16,
            "image_size": 48,
            "patch_size": 8,
            "layer_norm_eps": 1e-6,
        },
        "scale_factor": 2,
        "longest_edge": 96,
    },
    "256m": {
        "text": {
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "vocab_size": 49280,
            "max_position_embeddings": 8192,
            "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5,
        },
        "vision": SIGLIP_B16_512,
        "scale_factor": 4,
        "longest_edge": 2048,
    },
    "500m": {
        "text": {
            "hidden_size": 960,
            "intermediate_size": 2560,
            "num_hidden_layers": 32,
            "num_attention_heads": 15,
            "num_key_value_heads": 5,
            "vocab_size": 49280,
            "max_position_embeddings": 8192,
            "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5,
        },
        "vision": SIGLIP_B16_512,
        "scale_factor": 4,
        "longest_edge": 2048,
    },
    "2.2b": {
        "text": {
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 24,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "vocab_size": 49155,
            "max_position_embeddings": 16384,
            "rope_theta": 273768.0,
            "rms_norm_eps": 1e-5,
        },
        "vision": {
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 384,
            "patch_size": 14,
            "layer_norm_eps": 1e-6,
        },
        "scale_factor": 3,
        "longest_edge": 1536,
    },
}


def image_seq_len(shape: dict) -> int:
    """Tokens one tile becomes after the pixel shuffle."""
    vision = shape["vision"]
    return (vision["image_size"] // vision["patch_size"]) ** 2 // shape["scale_factor"] ** 2
