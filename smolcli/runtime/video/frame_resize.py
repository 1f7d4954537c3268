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

The sums are integers below 2^31 (PyTorch sums in int32); kept below 2^24 (Pass), they are exact in
float32, so each pass is a BLAS matrix product over the band of inputs that a block of outputs
reads, written in place; tests/test_frame_resize.py holds the result to torchvision's pixels, every one equal.
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
    """A block of outputs [start, end) and the inputs [low, high) they read, with their weights [outs, inputs].

    parts holds the weights, scaled by 2^-precision; a split pass holds two: the high parts, the low.
    """

    start: int
    end: int
    low: int
    high: int
    parts: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Pass:
    """One pass as float32 matrix products over bands, exact: every partial sum a float32 without rounding.

    The weights are the kernel's integers times 2^-precision, so the products sum to the kernel's
    sum already shifted; that is exact while the integer sum (plus the half added to round) stays
    below 2^24. Where 255 times a row's sum of |weights| could pass it (downscaling: the weights'
    precision grows with the scale), each weight is split as high * 2^shift + low: both products
    stay exact, and are joined in float64 on the (smaller) output. Downscales so large (hundredfold) that
    no split keeps their many taps exact run in float64 (sums below 2^31, exact there).
    """

    blocks: tuple[Band, ...]
    precision: int
    dtype: type  # np.float32, or np.float64 where no split is exact


FLOAT32_EXACT = 1 << 24  # float32 holds every integer below it


@lru_cache(maxsize=64)
def plan_pass(n_in: int, n_out: int) -> Pass:
    """The bands of one pass: blocks of about the kernel's width in outputs (as many zeros multiplied as taps)."""
    pass_taps = taps(n_in, n_out)
    weights = pass_taps.dense  # float64 [out, in] of integers
    half = 1 << (pass_taps.precision - 1)
    shift = _split_shift(weights, half)
    dtype = np.float32 if shift is not None else np.float64
    if shift is None or shift == 0:
        parts = [weights]
    else:
        high = np.floor(weights / (1 << shift))
        parts = [high * (1 << shift), weights - high * (1 << shift)]
    scale = 1.0 / (1 << pass_taps.precision)  # a power of two: scaled weights are exact, so are their sums
    size = max(4, math.ceil(pass_taps.weights.shape[1] * n_out / n_in))
    blocks = []
    for start in range(0, n_out, size):
        end = min(start + size, n_out)
        low = int(pass_taps.first[start:end].min())
        top = int((pass_taps.first[start:end] + pass_taps.count[start:end]).max())
        scaled = tuple(np.ascontiguousarray(part[start:end, low:top] * scale, dtype=dtype) for part in parts)
        blocks.append(Band(start, end, low, top, scaled))
    return Pass(tuple(blocks), pass_taps.precision, dtype)


def _split_shift(weights: np.ndarray, half: int) -> int | None:
    """0 when the sums over uint8 values are float32-exact as they are, else the smallest exact split; None: none."""
    if 255 * np.abs(weights).sum(axis=1).max() + half < FLOAT32_EXACT:
        return 0
    for shift in range(1, 16):
        high = np.floor(weights / (1 << shift))
        low = weights - high * (1 << shift)
        if max(np.abs(high).sum(axis=1).max(), low.sum(axis=1).max()) * 255 < FLOAT32_EXACT:
            return shift
    return None  # so many taps that the low parts alone pass 2^24


def _joined(out: np.ndarray, plan: Pass) -> np.ndarray:
    """The parts' sums (float [parts, ...]) -> the kernel's rounded uint8 values, as plan.dtype floats."""
    if len(out) == 1:
        sums = out[0]
    else:  # the two exact halves joined where their sum is exact too
        sums = out[0].astype(np.float64)
        sums += out[1]
    sums += 0.5  # the kernel's added half, then its shift: floor
    np.floor(sums, out=sums)
    np.clip(sums, 0, 255, out=sums)
    return sums.astype(plan.dtype, copy=False)


def _horizontal(planes: np.ndarray, n_out: int) -> np.ndarray:
    """C-order [3, H, W] of uint8 values -> C-order [3, H, n_out]: rows times each band's weights, in place."""
    plan = plan_pass(planes.shape[2], n_out)
    rows = planes.astype(plan.dtype, copy=False).reshape(-1, planes.shape[2])
    out = np.empty((len(plan.blocks[0].parts), rows.shape[0], n_out), plan.dtype)
    for band in plan.blocks:
        source = rows[:, band.low : band.high]
        for index, weights in enumerate(band.parts):
            np.matmul(source, weights.T, out=out[index, :, band.start : band.end])
    return _joined(out, plan).reshape(planes.shape[:2] + (n_out,))


def _vertical(planes: np.ndarray, n_out: int) -> np.ndarray:
    """C-order [3, H, W] of uint8 values -> C-order [3, n_out, W]: each band's weights times its rows, in place."""
    plan = plan_pass(planes.shape[1], n_out)
    planes = planes.astype(plan.dtype, copy=False)
    out = np.empty((len(plan.blocks[0].parts), planes.shape[0], n_out, planes.shape[2]), plan.dtype)
    for band in plan.blocks:
        source = planes[:, band.low : band.high]
        for index, weights in enumerate(band.parts):
            np.matmul(weights, source, out=out[index, :, band.start : band.end])
    return _joined(out, plan)


def resize_planes(planes: np.ndarray, width: int, height: int) -> np.ndarray:
    """[3, H, W] of uint8 values -> C-order [3, height, width] of uint8 values, as floats.

    Sizes equal to the input's are left as they are, as torchvision leaves them.
    """
    planes = np.ascontiguousarray(planes)  # each channel a contiguous plane: what BLAS reads in place
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
