"""The language model half: SmolLM2/Llama weights and the tokenizer, as a llama-architecture GGUF."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from smolcli.convert.checkpoint import Checkpoint, gguf_name
from smolcli.convert.gguf_out import PlannedTensor, QType, row_chunks, tensor_qtype, write_gguf
from smolcli.convert.quantize import QUANT_TYPES
from smolcli.convert.safetensors_file import TensorEntry
from smolcli.convert.vocab import Vocabulary


def rotary_interleave(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from Hugging Face's split halves to llama.cpp's interleaved pairs."""
    rows = weights.shape[0]
    return np.ascontiguousarray(
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)
    )


def plan_tensor(checkpoint: Checkpoint, entry: TensorEntry, qtype: QType) -> PlannedTensor:
    family, text = checkpoint.family, checkpoint.text
    name, pattern, _ = gguf_name(family.text_tensors, entry.name)
    heads = {"q": text["num_attention_heads"], "k": text["num_key_value_heads"]}.get(
        family.rotary_permuted.get(pattern, "")
    )
    qtype = tensor_qtype(entry.shape, qtype)

    transform = (lambda raw: rotary_interleave(raw, heads)) if heads else None
    return PlannedTensor(name, entry.shape, qtype, lambda: row_chunks(entry, qtype, transform))


def add_metadata(writer: gguf.GGUFWriter, checkpoint: Checkpoint, name: str, qtype: QType) -> None:
    text = checkpoint.text
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(QUANT_TYPES[qtype.name])  # the file type of the same name
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(text["vocab_size"])
    writer.add_context_length(int(text["max_position_embeddings"]))
    writer.add_embedding_length(text["hidden_size"])
    writer.add_feed_forward_length(text["intermediate_size"])
    writer.add_block_count(text["num_hidden_layers"])
    writer.add_head_count(text["num_attention_heads"])
    writer.add_head_count_kv(text["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(float(text["rms_norm_eps"]))
    writer.add_rope_freq_base(text["rope_theta"])
    writer.add_rope_dimension_count(text["head_dim"])
    if text["head_dim"] != text["hidden_size"] // text["num_attention_heads"]:
        writer.add_key_length(text["head_dim"])
        writer.add_value_length(text["head_dim"])
    if text["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(text["rope_factor"])


def write_text_model(
    checkpoint: Checkpoint,
    vocabulary: Vocabulary,
    path: Path,
    qtype: QType,
    name: str,
    report: Callable[[str], None],
    label: str,
) -> None:
    """Write the language model at a float type straight from the safetensors (quantize.py does the rest)."""
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    add_metadata(writer, checkpoint, name, qtype)
    vocabulary.write(writer)
    tensors = [plan_tensor(checkpoint, entry, qtype) for entry in checkpoint.text_tensors()]
    write_gguf(path, writer, tensors, report, label)
