"""Video frames resized as transformers' SmolVLM video processor resizes them: PyTorch's uint8 Lanczos, in numpy.

transformers 5.x resizes video frames with torchvision on uint8 tensors (`resample` LANCZOS, antialias
on): torchvision >= 0.27 hands LANCZOS to torch.nn.functional.interpolate(mode="lanczos",
antialias=True), which on the CPU runs PyTorch's native uint8 kernel (the Pillow-SIMD port). Pillow's
own Lanczos differs from it: it keeps 22 bits of weight precision where PyTorch keeps int16 weights
(1-2 levels on some pixels), and it runs the vertical pass first when the height shrinks and the
width grows (tens of levels on noise; measured). So frames do not go through Pillow; this
reproduces PyTorch's kernel step for step:

- per output index i: center = scale * (i + 0.5), scale = in / out; support 3 * max(scale, 1); taps
  from int(center - support + 0.5) to int(center + support + 0.5), clipped to the input; weights
  lanczos3((tap - center + 0.5) / max(scale, 1)), normalized to sum 1;
- weights to int16 at `precision` bits, the most (below 22) for which twice the largest weight
  still fits 15 bits; each weight rounded half away from zero;
- each output: (1 << (precision - 1) + sum of pixel * weight) >> precision, clipped to 0..255;
- the horizontal pass first, then the vertical, each only where that side changes size, the
  horizontal result stored as uint8 in between.

The sums are integers below 2^31 (PyTorch sums in int32), exact in float64 (and in float32 where
they stay below 2^24), so each pass is a BLAS matrix product over the band of inputs that a block
of outputs reads; tests/test_frame_resize.py holds it to torchvision's pixels, every one equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LANCZOS_SUPPORT = 3.0  # Lanczos-3: the kernel is zero outside [-3, 3)
MAX_PRECISION = 22  # PyTorch's (and Pillow-SIMD's) cap on the weights' fixed-point bits


def lanczos3(x: np.ndarray) -> np.ndarray:
    """sinc(x) * sinc(x / 3) on [-3, 3), zero elsewhere."""
    x = np.asarray(x, dtype=np.float64)
    return np.where((x >= -LANCZOS_SUPPORT) & (x < LANCZOS_SUPPORT), _sinc(x) * _sinc(x / LANCZOS_SUPPORT), 0.0)


def _sinc(x: np.ndarray) -> np.ndarray:
    scaled = np.where(x == 0, 1.0, x * math.pi)
    return np.where(x == 0, 1.0, np.sin(scaled) / scaled)


@dataclass(frozen=True)
class Taps:
    """One pass's fixed-point weights: output i reads inputs first[i] .. first[i] + count[i] - 1."""

    first: np.ndarray  # int64 [out]
    count: np.ndarray  # int64 [out]
    weights: np.ndarray  # int64 [out, max taps], zero past count
    precision: int

    @property
    def dense(self) -> np.ndarray:
        """float64 [out, in] weights: row i holds output i's taps in place."""
        n_in = int((self.first + self.count).max())
        matrix = np.zeros((len(self.first), n_in))
        for index, (start, count) in enumerate(zip(self.first, self.count, strict=True)):
            matrix[index, start : start + count] = self.weights[index, :count]
        return matrix


@lru_cache(maxsize=64)
def taps(n_in: int, n_out: int) -> Taps:
    """The weights of one pass from n_in to n_out samples, as PyTorch's antialiased uint8 kernel has them."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)  # downscaling widens the kernel by the scale
    support = LANCZOS_SUPPORT * stretch
    width = int(math.ceil(support)) * 2 + 1
    center = scale * (np.arange(n_out) + 0.5)
    # C casts truncate toward zero; the bounds are clipped to the input afterwards
    first = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    last = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), n_in)
    count = last - first
    offsets = np.arange(width)
    weights = lanczos3((offsets[None, :] + first[:, None] - center[:, None] + 0.5) / stretch)
    weights = np.where(offsets[None, :] < count[:, None], weights, 0.0)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.where(total != 0, weights / np.where(total == 0, 1.0, total), weights)
    precision = _precision(float(weights.max()))
    fixed = weights * float(1 << precision)
    rounded = np.where(weights < 0, np.trunc(fixed - 0.5), np.trunc(fixed + 0.5)).astype(np.int64)
    return Taps(first, count, rounded, precision)


def _precision(largest: float) -> int:
    precision = 0
    while precision < MAX_PRECISION and int(0.5 + largest * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    return precision


@dataclass(frozen=True)
class Band:
    """A block of outputs [start, end) and the inputs [low, high) they read, with their weights [outs, inputs]."""

    start: int
    end: int
    low: int
    high: int
    weights: np.ndarray


@lru_cache(maxsize=64)
def bands(n_in: int, n_out: int) -> tuple[tuple[Band, ...], np.dtype]:
    """One pass as matrix products over bands, and the float type that computes its sums exactly.

    A block of b outputs reads about b * scale + the kernel's width inputs: blocks of about the
    kernel's width in inputs keep the zeros multiplied in a band to about as many as the taps.
    float32 holds every integer below 2^24: when no partial sum can reach it (255 times the
    largest sum of |weights|: upscaling), float32 is exact and twice as fast as float64.
    """
    pass_taps = taps(n_in, n_out)
    largest = 255 * int(np.abs(pass_taps.weights).sum(axis=1).max()) + (1 << pass_taps.precision)
    dtype = np.dtype(np.float32 if largest < (1 << 24) else np.float64)
    dense = pass_taps.dense.astype(dtype)
    size = max(4, math.ceil(pass_taps.weights.shape[1] * n_out / n_in))
    blocks = []
    for start in range(0, n_out, size):
        end = min(start + size, n_out)
        low = int(pass_taps.first[start:end].min())
        high = int((pass_taps.first[start:end] + pass_taps.count[start:end]).max())
        blocks.append(Band(start, end, low, high, np.ascontiguousarray(dense[start:end, low:high])))
    return tuple(blocks), dtype


def _round(sums: np.ndarray, precision: int) -> np.ndarray:
    """The kernel's (sum + half) >> precision, clipped to 0..255, in place."""
    sums += sums.dtype.type(1 << (precision - 1))
    sums *= sums.dtype.type(1.0 / (1 << precision))  # a power of two: exact, so floor() is the shift
    np.floor(sums, out=sums)
    return np.clip(sums, 0, 255, out=sums)


def _horizontal(planes: np.ndarray, n_out: int) -> np.ndarray:
    """[3, H, W] of uint8 values -> [3, H, n_out]: each output column a weighted sum of a band of columns."""
    blocks, dtype = bands(planes.shape[2], n_out)
    rows = planes.astype(dtype, copy=False).reshape(-1, planes.shape[2])
    out = np.empty((rows.shape[0], n_out), dtype)
    for band in blocks:
        out[:, band.start : band.end] = rows[:, band.low : band.high] @ band.weights.T
    return _round(out, taps(planes.shape[2], n_out).precision).reshape(planes.shape[:2] + (n_out,))


def _vertical(planes: np.ndarray, n_out: int) -> np.ndarray:
    """[3, H, W] of uint8 values -> [3, n_out, W]: each output row a weighted sum of a band of rows."""
    blocks, dtype = bands(planes.shape[1], n_out)
    planes = planes.astype(dtype, copy=False)
    out = np.empty((planes.shape[0], n_out, planes.shape[2]), dtype)
    for band in blocks:
        np.matmul(band.weights, planes[:, band.low : band.high], out=out[:, band.start : band.end])
    return _round(out, taps(planes.shape[1], n_out).precision)


def resize_planes(planes: np.ndarray, width: int, height: int) -> np.ndarray:
    """[3, H, W] of uint8 values (any float or integer type) -> [3, height, width] of uint8 values, as floats.

    Sizes equal to the input's are left as they are, as torchvision leaves them.
    """
    if planes.shape[2] != width:  # the horizontal pass first, as PyTorch's kernel runs them
        planes = _horizontal(planes, width)
    if planes.shape[1] != height:
        planes = _vertical(planes, height)
    return planes


def resize_rgb(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [height, width, 3], equal to torchvision's resize(LANCZOS, antialias=True)."""
    if pixels.shape[:2] == (height, width):
        return pixels
    return to_rgb(resize_planes(pixels.transpose(2, 0, 1), width, height))


def to_rgb(planes: np.ndarray) -> np.ndarray:
    """[3, H, W] of uint8 values -> uint8 [H, W, 3]."""
    return np.ascontiguousarray(planes.transpose(1, 2, 0)).astype(np.uint8)
