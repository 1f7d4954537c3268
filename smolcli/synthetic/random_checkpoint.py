"""Write a random-weight SmolVLM checkpoint in Hugging Face layout, with numpy alone.

It serves the offline demo (no download, no torch) and the benchmarks (the real
shapes of each release). Tests check that transformers loads what it writes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from smolcli.models.smolvlm import SMOLVLM
from smolcli.models.smolvlm_shapes import SHAPES, image_seq_len
from smolcli.synthetic import byte_tokenizer

GENERATIONS = {
    "SmolVLM": {
        "architecture": "Idefics3ForConditionalGeneration",
        "model_type": "idefics3",
        "vision_model_type": "idefics3",
        "processor": "Idefics3Processor",
        "image_processor": "Idefics3ImageProcessor",
    },
    "SmolVLM2": {
        "architecture": "SmolVLMForConditionalGeneration",
        "model_type": "smolvlm",
        "vision_model_type": "smolvlm_vision",
        "processor": "SmolVLMProcessor",
        "image_processor": "SmolVLMImageProcessor",
    },
}
SAFETENSORS_DTYPES = {"BF16": "BF16", "F16": "F16", "F32": "F32"}


def config_files(shape: dict, generation: str, dtype: str) -> dict[str, dict]:
    names = GENERATIONS[generation]
    tokens = byte_tokenizer.tokenizer_json()
    ids = {t["content"]: t["id"] for t in tokens["added_tokens"]}
    text = {
        "model_type": "llama",
        "architectures": ["VLlama3ForCausalLM"],
        **shape["text"],
        "hidden_act": "silu",
        "bos_token_id": ids["<|im_start|>"],
        "eos_token_id": ids["<end_of_utterance>"],
        "pad_token_id": ids["<|im_end|>"],
        "tie_word_embeddings": False,
    }
    vision = {
        "model_type": names["vision_model_type"],
        **shape["vision"],
        "num_channels": 3,
        "hidden_act": "gelu_pytorch_tanh",
    }
    if generation == "SmolVLM2":
        # the released SmolVLM2 configs leave out keys that equal transformers' defaults
        for key, default in SMOLVLM.vision_defaults.items():
            if vision.get(key) == default and key != "image_size":
                vision.pop(key)
    torch_dtype = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dtype]
    config = {
        "architectures": [names["architecture"]],
        "model_type": names["model_type"],
        "image_token_id": ids["<image>"],
        "scale_factor": shape["scale_factor"],
        "tie_word_embeddings": False,
        "torch_dtype": torch_dtype,
        "text_config": text,
        "vision_config": vision,
    }
    tile = shape["vision"]["image_size"]
    preprocessor = {
        "image_processor_type": names["image_processor"],
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"longest_edge": shape["longest_edge"]},
        "resample": 1,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_pad": True,
        "do_image_splitting": True,
        "max_image_size": {"longest_edge": tile},
    }
    if generation == "SmolVLM2":
        # as the SmolVLM2 releases sample clips: 1 frame a second, at most 64, each one tile square
        preprocessor["video_sampling"] = {"fps": 1, "max_frames": 64, "video_size": {"longest_edge": tile}}
    files = {
        "config.json": config,
        "preprocessor_config.json": preprocessor,
        "processor_config.json": {"image_seq_len": image_seq_len(shape), "processor_class": names["processor"]},
        "tokenizer.json": tokens,
        "tokenizer_config.json": byte_tokenizer.tokenizer_config(chat_template_inline=generation == "SmolVLM"),
    }
    if generation == "SmolVLM":
        files["chat_template.json"] = {"chat_template": byte_tokenizer.CHAT_TEMPLATE}
    return files


def tensor_shapes(shape: dict) -> dict[str, tuple[int, ...]]:
    from smolcli.convert.checkpoint import expand_blocks

    text = {**shape["text"], "head_dim": shape["text"]["hidden_size"] // shape["text"]["num_attention_heads"]}
    vision = {**SMOLVLM.vision_defaults, **shape["vision"]}
    shapes = expand_blocks(SMOLVLM.text_shapes(text), text["num_hidden_layers"])
    shapes.update(
        expand_blocks(
            SMOLVLM.vision_shapes(vision, shape["scale_factor"], text["hidden_size"]), vision["num_hidden_layers"]
        )
    )
    return dict(sorted(shapes.items()))


# Trained SigLIP towers' LayerNorms give a few channels tens of times the gain of the rest, the same few in every
# layer ("massive activations"; RepQ-ViT): random towers have none, so int8's one scale per token row is never
# tested against them. write_random_checkpoint(large_gain=LARGE_GAIN) gives a checkpoint such channels.
LARGE_GAIN = 40.0
VISION_LAYER_NORM = re.compile(r"vision_model\.(encoder\.layers\.\d+\.layer_norm[12]|post_layernorm)\.weight$")


def large_gain_channels(width: int) -> list[int]:
    """The few channels (3 of any width) that a large-gain checkpoint's vision LayerNorms amplify."""
    return sorted({width // 8 + 1, width // 2 - 3, width - 5})


def random_tensor(rng: np.random.Generator, name: str, shape: tuple[int, ...], large_gain: float = 1.0) -> np.ndarray:
    """Weights scaled so that activations and logits stay of order one; large_gain: see LARGE_GAIN."""
    if len(shape) == 1:
        base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
        values = (base + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        if large_gain != 1.0 and VISION_LAYER_NORM.search(name):
            values[large_gain_channels(shape[0])] *= np.float32(large_gain)
        return values
    fan_in = int(np.prod(shape[1:]))
    scale = 1.0 if name.endswith("embed_tokens.weight") else 1.0 / np.sqrt(fan_in)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)


def encode(data: np.ndarray, dtype: str) -> bytes:
    if dtype == "BF16":
        words = data.astype(np.float32).view(np.uint32)
        rounded = (words + 0x7FFF + ((words >> 16) & 1)) >> 16  # round to nearest even
        return rounded.astype("<u2").tobytes()
    return data.astype({"F16": "<f2", "F32": "<f4"}[dtype]).tobytes()


def write_safetensors(
    path: Path, shapes: dict[str, tuple[int, ...]], dtype: str, seed: int, large_gain: float = 1.0
) -> None:
    itemsize = 4 if dtype == "F32" else 2
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = int(np.prod(shape)) * itemsize
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little"))
        handle.write(raw)
        for name, shape in shapes.items():
            handle.write(encode(random_tensor(rng, name, shape, large_gain), dtype))


def write_random_checkpoint(
    folder: Path,
    shape: str | dict = "tiny",
    generation: str = "SmolVLM",
    dtype: str = "BF16",
    seed: int = 0,
    large_gain: float = 1.0,
) -> Path:
    """Write a complete checkpoint folder; files appear under their final names only when whole.

    `shape` names an entry of models.smolvlm_shapes.SHAPES or is such an entry itself. large_gain: the vision
    LayerNorms' large_gain_channels get this gain (LARGE_GAIN: as trained towers), every other weight the same as
    with 1.0 and the same seed.
    """
    shape = SHAPES[shape] if isinstance(shape, str) else shape
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {
        name: json.dumps(content, indent=2, ensure_ascii=False)
        for name, content in config_files(shape, generation, dtype).items()
    }
    if generation == "SmolVLM2":
        files["chat_template.jinja"] = byte_tokenizer.VIDEO_CHAT_TEMPLATE  # how newer releases ship it
    for name, content in files.items():
        partial = folder / f".{name}.partial"
        partial.write_text(content, encoding="utf-8")
        os.replace(partial, folder / name)
    partial = folder / ".model.safetensors.partial"
    write_safetensors(partial, tensor_shapes(shape), dtype, seed, large_gain)
    os.replace(partial, folder / "model.safetensors")
    return folder
