"""Merge a PEFT adapter into its base in float32, tensor by tensor, with numpy.

LoRA:  W' = W + s * B @ A, s = lora_alpha / r (lora_alpha / sqrt(r) with rsLoRA), times --adapter-scale.
DoRA:  W' = m / ||W + s * B @ A||_row * (W + s * B @ A): PEFT's merge, the norm taken over each output row.
Both are row-local, so a merged tensor is produced a slice of rows at a time, like any stored tensor: the
writers in text_model.py and mmproj.py take the merged checkpoint as they take a plain one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from smolcli.convert.adapter_folder import Adapter, LoraModule
from smolcli.convert.checkpoint import Checkpoint
from smolcli.convert.safetensors_file import TensorEntry, to_float32


def _f32(entry: TensorEntry, start: int | None = None, stop: int | None = None) -> np.ndarray:
    data = entry.load() if start is None else entry.load_rows(start, stop)
    return to_float32(np.asarray(data), entry.dtype)


def merged_rows(base: TensorEntry, lora: LoraModule, scale: float, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of the merged weight, in float32."""
    weight = _f32(base, start, stop)
    delta = _f32(lora.b, start, stop) @ _f32(lora.a)
    combined = weight + np.float32(scale * lora.scale) * delta
    if lora.magnitude is None:
        return combined
    # DoRA: the norm is taken with the scale in place, as PEFT's forward does (set_scale scales its `scaling`)
    norm = np.linalg.norm(combined, axis=1, keepdims=True)
    return _f32(lora.magnitude)[start:stop, None] / norm * combined


@dataclass(frozen=True)
class MergedTensor(TensorEntry):
    """A base tensor with its LoRA folded in; read like a float32 tensor on disk."""

    lora: LoraModule | None = None
    base: TensorEntry | None = None
    scale: float = 1.0

    def load(self) -> np.ndarray:
        return self.load_rows(0, self.shape[0])

    def load_rows(self, start: int, stop: int) -> np.ndarray:
        return merged_rows(self.base, self.lora, self.scale, start, stop)


def merged_entry(base: TensorEntry, lora: LoraModule, scale: float) -> MergedTensor:
    nbytes = math.prod(base.shape) * 4
    return MergedTensor(base.name, "F32", base.shape, base.path, base.offset, nbytes, lora=lora, base=base, scale=scale)


def _renamed(entry: TensorEntry, name: str) -> TensorEntry:
    return dataclasses.replace(entry, name=name)


def merged_checkpoint(checkpoint: Checkpoint, adapter: Adapter, scale: float = 1.0) -> Checkpoint:
    """The checkpoint as the writers see it once the adapter is merged (modules_to_save replacing whole tensors)."""
    tensors = dict(checkpoint.tensors)
    for name, entry in adapter.replaced.items():
        tensors[name] = _renamed(entry, name)
    for name, lora in adapter.modules.items():
        tensors[name] = merged_entry(tensors[name], lora, scale)
    return dataclasses.replace(checkpoint, tensors=tensors)
