"""What the converter and the runtime need to know about one model family, as one typed object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from gguf import MODEL_TENSOR, TENSOR_NAMES

ShapeTable = dict[str, tuple[int, ...]]


def tensor_name(tensor: MODEL_TENSOR, suffix: str = "weight") -> str:
    """llama.cpp's name for a tensor (gguf's TENSOR_NAMES), "{bid}" standing for the block index."""
    return f"{TENSOR_NAMES[tensor]}.{suffix}"


@dataclass(frozen=True, eq=False)
class ModelFamily:
    name: str
    architectures: Mapping[str, str]  # config.json "architectures" -> release generation
    vision_model_types: tuple[str, ...]
    text_architectures: tuple[str | None, ...]
    # values transformers falls back to when a config key is absent
    top_defaults: Mapping[str, object]
    vision_defaults: Mapping[str, object]
    text_defaults: Mapping[str, object]
    preprocessor_defaults: Mapping[str, object]
    # Hugging Face name -> GGUF name; "{bid}" is the block index
    text_tensors: Mapping[str, str]
    rotary_permuted: Mapping[str, str]  # GGUF name pattern -> "q" or "k": rows llama.cpp wants interleaved
    vision_tensors: Mapping[str, str]
    vision_f32_tensors: tuple[str, ...]  # mmproj tensors kept F32 whatever the type asked for
    ignored_tensor_suffixes: tuple[str, ...]  # checkpoint tensors that carry no weights
    text_shapes: Callable[[dict], ShapeTable]  # text config -> expected Hugging Face shapes
    vision_shapes: Callable[[dict, int, int], ShapeTable]  # (vision config, scale factor, text width) -> shapes
    pre_tokenizers: Mapping[str, dict]  # llama.cpp pre-tokenizer name -> the tokenizer.json definition
    image_marker: str
    end_of_utterance: str
    render_prompt: Callable[[list[tuple[str, str]], str | None], str]
