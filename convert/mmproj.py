"""The vision half: SigLIP encoder + pixel-shuffle connector as an mtmd `idefics3` projector GGUF."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import gguf

from smolcli.convert.checkpoint import Checkpoint, gguf_name
from smolcli.convert.gguf_out import PlannedTensor, QType, row_chunks, tensor_qtype, write_gguf
from smolcli.convert.quantize import QUANT_TYPES
from smolcli.convert.safetensors_file import TensorEntry
from smolcli.models.smolvlm_video import VIDEO_FPS_KEY, VIDEO_MAX_FRAMES_KEY, VIDEO_SIZE_KEY, checkpoint_video_sampling

MMPROJ_TYPES = {"F32": QType.F32, "F16": QType.F16, "Q8_0": QType.Q8_0}


def plan_tensor(checkpoint: Checkpoint, entry: TensorEntry, qtype: QType) -> PlannedTensor:
    name, _, _ = gguf_name(checkpoint.family.vision_tensors, entry.name)
    qtype = tensor_qtype(entry.shape, qtype, keep_f32=name in checkpoint.family.vision_f32_tensors)

    return PlannedTensor(name, entry.shape, qtype, lambda: row_chunks(entry, qtype))


def add_metadata(writer: gguf.GGUFWriter, checkpoint: Checkpoint, name: str, qtype: QType) -> None:
    vision, pre = checkpoint.vision, checkpoint.preprocessor
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_name(name)
    writer.add_file_type(QUANT_TYPES[qtype.name])  # the file type of the same name
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type(gguf.VisionProjectorType.IDEFICS3)
    writer.add_vision_projection_dim(checkpoint.text["hidden_size"])
    writer.add_vision_image_size(vision["image_size"])
    writer.add_vision_patch_size(vision["patch_size"])
    writer.add_vision_embedding_length(vision["hidden_size"])
    writer.add_vision_feed_forward_length(vision["intermediate_size"])
    writer.add_vision_block_count(vision["num_hidden_layers"])
    writer.add_vision_head_count(vision["num_attention_heads"])
    writer.add_vision_attention_layernorm_eps(float(vision["layer_norm_eps"]))
    writer.add_vision_image_mean([float(x) for x in pre["image_mean"]])
    writer.add_vision_image_std([float(x) for x in pre["image_std"]])
    writer.add_vision_projector_scale_factor(checkpoint.scale_factor)
    writer.add_vision_preproc_image_size(pre["longest_edge"])
    writer.add_vision_use_gelu(True)
    video = checkpoint_video_sampling(pre)
    if video is not None:  # the runtime samples clips by it (api/video.py); absent: the releases' defaults
        writer.add_float32(VIDEO_FPS_KEY, video["fps"])
        writer.add_uint32(VIDEO_MAX_FRAMES_KEY, video["max_frames"])
        if video["size"] is not None:
            writer.add_uint32(VIDEO_SIZE_KEY, video["size"])


def write_mmproj(
    checkpoint: Checkpoint, path: Path, qtype: QType, name: str, report: Callable[[str], None], label: str
) -> None:
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ])
    add_metadata(writer, checkpoint, name, qtype)
    tensors = [plan_tensor(checkpoint, entry, qtype) for entry in checkpoint.vision_tensors()]
    write_gguf(path, writer, tensors, report, label)
