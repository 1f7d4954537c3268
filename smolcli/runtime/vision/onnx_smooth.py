"""Per-channel activation scales folded into the LayerNorms and the layers they feed (SmoothQuant, Xiao et al. 2023).

Trained SigLIP towers' LayerNorms give a few channels tens of times the gain of the rest, the same few in every
layer. The int8 graph quantizes each token's activations with one scale per row, so those channels set the
scale and every other channel keeps a few levels. For a LayerNorm (gamma, beta) feeding a linear W:

    LN(x) W^T = (xhat * gamma + beta) W^T = (xhat * gamma / s + beta / s) (W * s)^T    for any s > 0 per channel,

exact in real arithmetic, so the fp32 graph is unchanged (to rounding). s moves part of each channel's range
from the activations into the weight's column: s_c = a_c^alpha / w_c^(1 - alpha), a_c the channel's expected
magnitude after the LayerNorm (|gamma_c| + |beta_c|: xhat is normalized per token, so the LayerNorm's own
weights say it without calibration data), w_c the largest |W[:, c]| over the linears that read it. Folded here:
ln1 into attn_q/k/v, ln2 into ffn_up. The post-layernorm feeds the connector through the pixel shuffle, and the
connector stays fp32 in the default form: not folded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from smolcli.runtime.vision.onnx_graph import VisionWeights

ALPHA = 0.5  # SmoothQuant's balance: half of a channel's range (in log) to the weights, half kept


def smoothing_scales(gamma: np.ndarray, beta: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """s per input channel (geometric mean 1) for a LayerNorm (gamma, beta) feeding these [out, in] weights."""
    activation = np.abs(gamma) + np.abs(beta)
    column = np.max([np.abs(w).max(axis=0) for w in weights], axis=0)
    floor = 1e-5
    s = np.maximum(activation, floor) ** alpha / np.maximum(column, floor) ** (1 - alpha)
    return (s / np.exp(np.log(s).mean())).astype(np.float32)


class SmoothedTensors(Mapping):
    """The mmproj's tensors (onnx_graph.DequantizedTensors) with the scales folded in when they are read."""

    def __init__(self, tensors, layers: int, alpha: float = ALPHA):
        self._tensors = tensors
        self._folded: dict[str, np.ndarray] = {}  # tensor name -> s to divide (a LayerNorm) or multiply (a weight)
        for bid in range(layers):
            p = f"v.blk.{bid}."
            for norm, readers in (("ln1", ("attn_q", "attn_k", "attn_v")), ("ln2", ("ffn_up",))):
                s = smoothing_scales(
                    tensors[f"{p}{norm}.weight"],
                    tensors[f"{p}{norm}.bias"],
                    [tensors[f"{p}{r}.weight"] for r in readers],
                    alpha,
                )
                self._folded[f"{p}{norm}.weight"] = self._folded[f"{p}{norm}.bias"] = 1 / s
                for reader in readers:
                    self._folded[f"{p}{reader}.weight"] = s

    def __getitem__(self, name: str) -> np.ndarray:
        value = self._tensors[name]
        scale = self._folded.get(name)
        # a LayerNorm's [in] vector, or a weight's [out, in] columns: both broadcast over the last axis
        return value if scale is None else (value * scale).astype(np.float32)

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self._tensors.shape(name)

    def scales(self, name: str) -> np.ndarray | None:
        """The factor folded into this tensor (benchmarks, tests), or None."""
        return self._folded.get(name)


def smoothed(weights: VisionWeights, alpha: float = ALPHA) -> VisionWeights:
    """The same encoder, its LayerNorm-fed linears' activations evened out across channels."""
    return dataclasses.replace(weights, tensors=SmoothedTensors(weights.tensors, weights.layers, alpha))


OUTLIER_RATIO = 6.0  # a channel whose expected magnitude is this many times the LayerNorm's median is an outlier


def outlier_channels(gamma: np.ndarray, beta: np.ndarray, ratio: float = OUTLIER_RATIO) -> np.ndarray:
    """The channels of a LayerNorm's output far larger than the rest (int64 indices, maybe none)."""
    activation = np.abs(gamma) + np.abs(beta)
    return np.flatnonzero(activation > ratio * np.median(activation)).astype(np.int64)


def layer_outliers(weights: VisionWeights, ratio: float = OUTLIER_RATIO) -> dict[str, np.ndarray]:
    """Linear layer name -> the outlier channels of the LayerNorm that feeds it (ln1: q, k, v; ln2: ffn_up)."""
    t, found = weights.tensors, {}
    for bid in range(weights.layers):
        p = f"v.blk.{bid}."
        for norm, readers in (("ln1", ("attn_q", "attn_k", "attn_v")), ("ln2", ("ffn_up",))):
            channels = outlier_channels(t[f"{p}{norm}.weight"], t[f"{p}{norm}.bias"], ratio)
            if len(channels):
                found.update({p + reader: channels for reader in readers})
    return found
