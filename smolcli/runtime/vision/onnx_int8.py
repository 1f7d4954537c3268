"""int8 forms of the vision graph (onnx_graph): how each linear layer is quantized.

Where the error comes from (benchmarks/int8_error_sources.py): on SmolVLM-256M's shapes the
connector projection (12288 inputs per output), attn_out, fc2 and attn_v carry most of it, weights
and activations about equally; per-channel weight scales (one per 768-12288 weights) lose more than
llama.cpp's Q8_0 blocks of 32. Each form is measured in benchmarks/vision_engines.py.

- "outlier-asym-fp32-o" (the default, FORMAT_VERSION 10): FORMAT_VERSION 9's graph (below) with its one-product int8
  weights (q, k, v, ffn_up, ffn_down where each is one int8 product) rounded by GPTQ (onnx_gptq, gptq_targets,
  gptq_form) instead of to the nearest step, calibrated on the self-check's probe tiles in its layered fp32 run: the
  same nodes and kernels, no cost per tile. On the tiny checkpoints under mtmd Q8_0 on all 16 fidelity cases (format
  9: 15) and on 63 of the 64 of four more seeds (benchmarks/vision_fidelity.py; docs/vision-precision.md).
  Since then (format 10 unreleased, the number kept): in the layers with outlier channels, attn_q and attn_k are
  split like v (the outlier channels' fp32 product beside one GPTQ-rounded int8 product, DEFAULT_QK) instead of fp32,
  except in the first layer, kept in fp32: on the tiny large-gain checkpoints the first layer's q and k are the ones
  whose int8 rounding moves a tile under 0.999 (-qk1g: 0.99862; 2 of 32 more cases on seeds 2-5), the later layers'
  leave every tile at 0.9998 or more; on the 256M large-gain twin 0.91x format 10's first time per tile, worst photo
  tile 0.99941 (fp32 q and k: 0.99944). Plain weights: the same graph as before. Format 10 as first written: -qk32.
  And in those layers ffn_down is one GPTQ-rounded int8 product like everywhere else, where format 9 read its weight
  as two int8 weights (nearest rounding; kept as -d2): on the 256M twin 0.89x the time per tile with the worst photo
  tile 0.99951 (two weights: 0.99941); the tiny large-gain cases stay under Q8_0 on all 8 (first-token gaps 5e-4 to
  5e-3, 8x or more under Q8_0's, but further than -d2's on five; docs/vision-precision.md).
  And the split layers' outlier channels' fp32 product is added by the int8 product's own correction Gemm (its input
  columns beside the zero points', outlier_split's fold) instead of a MatMul and an Add of their own: the same
  numbers but for float32's order, one [tokens, out] buffer and pass less per split layer; kept apart as -sep. On
  the 256M twin -sep's time per tile falls about 5% (MatMul and Add from 106 to 86 ms of a 0.6 s tile), which leaves
  the twin within 2-3% of the plain graph's time (docs/vision-precision.md).
- "-o8": the default with attn_out one GPTQ-rounded int8 product instead of fp32 (0.95x the default's time on the
  256M twin): on the tiny large-gain checkpoints a tile falls to 0.99880 (SmolVLM2, square), from the activations'
  rounding (attn_out's weight alone in int8, fp32 input: 0.99973); with the input as two int8 inputs it holds but is
  1.03x the default's time. Not the default.
- "outlier-asym-fp32-o-v9" (FORMAT_VERSION 9, kept for benchmarks): "asym-fp32-o" with the LayerNorm outputs'
  outlier channels (a few channels tens of times larger, as trained SigLIP towers have; found from each
  LayerNorm's weights, onnx_smooth.layer_outliers) read in fp32 by attn_v and ffn_up (outlier_split), and
  attn_q and attn_k in fp32 in the layers that have them (outlier_form says why). In the layers whose ffn_up reads
  outlier channels (trained towers: every layer), ffn_down's weight is read as two int8 weights
  (residual_weight_linear: its int8 rounding error as a second int8 weight, one more int8 product). On
  SmolVLM-256M's shapes with large-gain channels ffn_down's error was the weights': its input as two int8 inputs
  left the worst photo tile at 0.9958, its weight as two at 0.99936 (FORMAT_VERSION 8 ran ffn_down there in fp32:
  0.99947, 1.2x slower). On plain weights the graph is FORMAT_VERSION 8's. On the large-gain tiny checkpoints it
  keeps per-tile cosine 0.9996 to fp32 where "asym-fp32-o" fell to 0.979. The forms below were measured against it
  ("the default" there is format 9's) and, like it, round every int8 weight to its nearest step.
- "outlier-asym-fp32-o-w2": the same with ffn_down's weight as two in every layer. On the tiny test checkpoints the
  error left was mostly the weights' (every int8 weight as two: first-token gaps 2-4x smaller; activations as
  two: none smaller), and this form is under mtmd Q8_0 on all 16 fidelity cases (the default on 15), but it costs
  1.17x the default's time per plain 256M tile, past issue 21's 0.45x of mtmd Q8_0; not the default.
- "outlier-asym-fp32-o-lw2": the default with ffn_down's weight as two in the last layer as well (about 1% of a
  plain 256M tile): under Q8_0 on all 16 cases, but over four more random checkpoints of each shape
  (benchmarks/vision_fidelity.py --seeds) no closer than the default (12 of 32 plain cases under Q8_0, the
  default 11; -w2 18; every weight as two 32): on random tiny weights the first token's gap follows the weights'
  rounding error, the same for every token, far more than the activations' (docs/vision-precision.md).
- "-qkr2" / "-qkb2" / "-qw2kb2" / "-qb2kw2": the default with the outlier layers' q and k split (the outlier channels
  in fp32) and their int8 part read with the input as two int8 inputs (residual_asym_linear), or input and weight
  both as two (residual_both_linear), or one of q and k so and the other with its weight as two, not fp32:
  measured on the 256M large-gain twin for issue 21's speed bound (docs/vision-precision.md): -qkr2's worst photo
  tile 0.9952, -qw2kb2's 0.99914; -qkb2 and -qb2kw2 hold (0.99935, as fp32 q and k) but are no faster than the
  default (three runs: 0.95x, 1.13x, 1.08x; 1.05x): three int8 products and their passes cost one fp32 one.
- "-qk1g" / "-qkw2g" (GPTQ_FORMS): the default (GPTQ-rounded) with the outlier layers' q and k split and int8
  instead of fp32, their int8 weight rounded by GPTQ in the same calibration: one int8 product, or the weight as two
  int8 weights (GPTQ's the first, the second what it left, rounded to the nearest step). On the 256M large-gain twin
  (docs/vision-precision.md, "The twin's q and k under GPTQ rounding") both hold 0.999 on the photo and probe
  (0.99911, 0.99919), but -qk1g falls to 0.99862 on a tiny large-gain case and is 0.88-0.92x -qk32's time,
  -qkw2g is no faster; the default is -qk1g with the first layer's q and k in fp32. "-qkcat": -qk32 with q and k as
  one fp32 MatMul of [Wq | Wk] (the same numbers): no faster (1.00x).
- "outlier-asym-fp32-o-v8" / "-v7": the default as FORMAT_VERSION 8 built it (ffn_down in fp32 in the outlier
  layers, one int8 product elsewhere) and as 7 did (ffn_down one int8 product everywhere), kept for
  benchmarks' side-by-side figures.
- "-g2" / "-g4" / "-g8", "-r2", "-dw2", "-allw2", "-qkw2", "outlier-asym-fp32-vo": measured beside the default
  (docs/vision-precision.md): the outlier layers' ffn_down with its input in 2-8 groups of K
  (grouped_asym_linear) or as two int8 inputs (residual_asym_linear) (the rest as FORMAT_VERSION 8); ffn_down's
  weight as two int8 weights with the outlier layers' in fp32; every int8 weight
  as two; the default with the outlier layers' q and k split and int8 (weights as two) instead of fp32; attn_v
  in fp32.
- "outlier-asym-fp32-o-a8": the default with attention's two products in int8 too (onnx_attention_int8), fp32
  MultiHeadAttention kept in the layers with outlier channels. It holds the bounds on plain weights (per-tile
  cosine 0.99980 on 256M shapes) but is no faster than ORT's fused fp32 attention (the scores are written out and
  softmaxed and quantized by separate ops; docs/benchmarks.md), so not the default.
- "smooth-asym-fp32-o": "asym-fp32-o" on SmoothQuant-folded weights (onnx_smooth.smoothed, alpha 0.5):
  measured beside it, it only reached cosine 0.990 on the same large-gain checkpoint: attention's q . k
  takes the columns the fold made large, so the default splits the channels off instead.
- "asym-fp32-o": per-row-asym, with the connector projection (0.5% of the
  multiply-adds, the largest single error) and attn_out (1/12 of the linear ones) in fp32.
- "asym-fp32-vo": the same with attn_v in fp32 too: closer still, slower.
- "asym-fp32-c": per-row-asym with only the connector in fp32.
- "asym-nbits-vo": per-row-asym, the connector in fp32, attn_out and attn_v as MatMulNBits.
- "asym-nbits-o" / "asym-nbits1-o": the default with attn_out and the connector as 8-bit MatMulNBits
  (accuracy level 4 / level 1, float arithmetic): 56 MB of fp32 weights become 15 MB on 256M, but
  the error on the tiny test checkpoints rises past the Q8_0 mmproj's (1.25x / 1.18x), so not the default.
- "asym-fp32-o-v5": the default as FORMAT_VERSION 5 wrote it (MatMul / Softmax attention, the rescale
  step by step), kept for benchmarks' side-by-side figures.
- "per-row-asym": int8 per-channel weights, activations quantized per token with each row's own
  min and max (GELU's mostly positive outputs use all 256 levels); MatMulInteger takes only a scalar
  zero point, so the rows' zero points are taken out after the product (zero point x the weight's
  column sums), fused into MatMulIntegerToFloat + Mul + one Gemm (per_row_asym_linear).
- "per-row": the same with symmetric activations (one absmax scale per row, zero point 128).
- "nbits": every linear layer as com.microsoft MatMulNBits 8-bit, one scale per 32 weights,
  activations quantized per 32 (accuracy level 4): Q8_0's arithmetic, but in ORT 1.32's MLAS on
  these shapes about as slow as fp32.
- "dynamic": onnxruntime's quantize_dynamic, QInt8 per-channel weights, one activation scale per
  tensor: fast, but as far from the reference as per-row.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from smolcli.runtime.vision.onnx_attention_int8 import int8_attention
from smolcli.runtime.vision.onnx_graph import (
    ATTENTION,
    MS_DOMAIN,
    Attend,
    Graph,
    Linear,
    VisionWeights,
    WeightsFile,
    build_model,
    float_linear,
)
from smolcli.runtime.vision.onnx_smooth import layer_outliers, smoothed

PER_ROW_OPSET = 21  # blocked QuantizeLinear
NBITS_BLOCK = 32  # Q8_0's block
CONNECTOR, ATTN_OUT, ATTN_V = "mm.model.fc", "attn_out", "attn_v"  # layer name endings
ATTN_Q, ATTN_K = "attn_q", "attn_k"
FFN_UP, FFN_DOWN = "ffn_up", "ffn_down"
V5_DEFAULT = "asym-fp32-o-v5"  # the default form as FORMAT_VERSION 5 wrote it: benchmarks measure against it


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight [out, in] -> (int8 [in, out], float32 scale [out]): symmetric, one scale per output channel."""
    absmax = np.abs(weight).max(axis=1)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q.T), scale


def _add_bias(g: Graph, y: str, bias: np.ndarray | None, name: str) -> str:
    return g.op("Add", [y, g.const(f"{name}.b", bias.astype(np.float32))]) if bias is not None else y


def _f32(g: Graph, base: str, value: float) -> str:
    return g.const(g.name(base), np.array(value, np.float32))


def per_row_linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
    wq, w_scale = quantize_weight(weight)
    axes = g.const(g.name("axes"), np.array([-1], np.int64))
    absmax = g.op("ReduceMax", [g.op("Abs", [x]), axes], keepdims=1)  # [..., tokens, 1]
    row_scale = g.op("Div", [g.op("Max", [absmax, _f32(g, "tiny", 1e-12)]), _f32(g, "q127", 127)])
    zero_points = g.op("ConstantOfShape", [g.op("Shape", [row_scale])], value=_uint8(128))
    # blocked QuantizeLinear (opset 21), one block per row: one fused pass instead of Div, Round, Add, Cast
    q = g.op("QuantizeLinear", [x, row_scale, zero_points], axis=-1, block_size=weight.shape[1])
    zero_point = g.const(g.name("zp"), np.array(128, np.uint8))
    product = g.op("MatMulInteger", [q, g.const(f"{name}.wq", wq), zero_point], name)
    y = g.op("Mul", [g.op("Cast", [product], to=1), row_scale])
    return _add_bias(g, g.op("Mul", [y, g.const(f"{name}.ws", w_scale)]), bias, name)


def _asym_rows(g: Graph, x: str, k: int) -> tuple[str, str, str]:
    """x quantized per token to uint8 with each row's own min and max: (q, row scale, row zero point as float)."""
    axes = g.const(g.name("axes"), np.array([-1], np.int64))
    zero = _f32(g, "zero", 0.0)
    low = g.op("Min", [g.op("ReduceMin", [x, axes], keepdims=1), zero])  # the range holds 0: zero is exact
    high = g.op("Max", [g.op("ReduceMax", [x, axes], keepdims=1), zero])
    row_scale = g.op("Max", [g.op("Div", [g.op("Sub", [high, low]), _f32(g, "q255", 255)]), _f32(g, "tiny", 1e-12)])
    zero_point = g.op("Round", [g.op("Div", [g.op("Neg", [low]), row_scale])])  # [..., tokens, 1], 0..255
    q = g.op("QuantizeLinear", [x, row_scale, g.op("Cast", [zero_point], to=2)], axis=-1, block_size=k)
    return q, row_scale, zero_point


def per_row_asym_unfused_linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
    """per_row_asym_linear's arithmetic step by step: the int32 product, its float copy and the zero points'
    [tokens, out] correction are each a buffer of their own (FORMAT_VERSION 5's form)."""
    wq, w_scale = quantize_weight(weight)
    column_sums = wq.astype(np.int64).sum(axis=0).astype(np.float32)
    q, row_scale, zero_point = _asym_rows(g, x, weight.shape[1])
    no_zero_point = g.const(g.name("zp"), np.array(0, np.uint8))
    product = g.op("MatMulInteger", [q, g.const(f"{name}.wq", wq), no_zero_point], name)
    # (q - zp) . w = q . w - zp * (column sums of w)
    shift = g.op("Mul", [zero_point, g.const(f"{name}.cs", column_sums)])
    y = g.op("Mul", [g.op("Sub", [g.op("Cast", [product], to=1), shift]), row_scale])
    return _add_bias(g, g.op("Mul", [y, g.const(f"{name}.ws", w_scale)]), bias, name)


def per_row_asym_linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
    """Per-token asymmetric activations x per-channel int8 weights, rescaled without a [tokens, out] temporary.

    ((q - zp) . w) * rs * ws + b = (q . w * ws) * rs - (zp * rs) x (cs * ws) + b, cs the weight's column sums:
    com.microsoft MatMulIntegerToFloat writes q . w * ws straight as float (no int32 buffer), Mul scales its
    rows in place, and one Gemm of inner size 2 ([-zp * rs, 1] x [cs * ws; b]) adds the zero points' correction
    and the bias into the same buffer (C is Gemm's in-place input).
    """
    return _asym_linear_of(g, x, *quantize_weight(weight), bias, name)


def _asym_linear_of(
    g: Graph, x: str, wq: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None, name: str, side: Side | None = None
) -> str:
    """per_row_asym_linear of a weight already quantized (int8 [in, out], scale [out]); side: _asym_product's."""
    q, row_scale, zero_point = _asym_rows(g, x, wq.shape[0])
    weight_names = g.const(f"{name}.wq", wq), g.const(f"{name}.ws", w_scale)
    return _asym_product(g, (q, row_scale, zero_point), weight_names, _column_sums(wq) * w_scale, bias, name, side)


def _column_sums(wq: np.ndarray) -> np.ndarray:
    return wq.astype(np.int64).sum(axis=0).astype(np.float32)


# An fp32 product added to a linear layer's output: (input [..., tokens, few] (graph name), weight [few, out])
Side = tuple[str, np.ndarray]


def _asym_product(
    g: Graph, rows, weight_names, scaled_sums: np.ndarray, bias: np.ndarray | None, name: str, side: Side | None = None
) -> str:
    """per_row_asym_linear's product of _asym_rows' (q, row scale, zero point) and the int8 weight and its
    scales (graph names), scaled_sums its column sums x scales. side: an fp32 product (outlier_split's outlier
    channels) added by the same Gemm as the zero points' correction and the bias, its input's columns beside
    theirs: no [tokens, out] buffer of its own and no Add pass over the output (on SmolVLM-256M's large-gain twin
    the separate MatMul and Add cost about 5% of a tile)."""
    q, row_scale, zero_point = rows
    n = len(scaled_sums)
    one, no_zero_point = _f32(g, "one", 1.0), g.const(g.name("zp"), np.array(0, np.uint8))
    inputs = [q, weight_names[0], one, weight_names[1], no_zero_point]
    y = g.op("Mul", [g.op("MatMulIntegerToFloat", inputs, name, domain=MS_DOMAIN), row_scale])
    correction = g.op("Neg", [g.op("Mul", [zero_point, row_scale])])  # [..., tokens, 1]
    columns, rows_of_right = [correction], [scaled_sums[None]]
    if bias is not None:  # [-zp * rs, 1]: the bias rides on the ones
        columns.append(g.op("Expand", [one, g.op("Shape", [correction])]))
        rows_of_right.append(bias.astype(np.float32)[None])
    if side is not None:  # [..., x_outliers]: their fp32 weight rows below
        columns.append(side[0])
        rows_of_right.append(side[1].astype(np.float32))
    right = np.concatenate(rows_of_right)
    left = g.op("Concat", columns, axis=-1) if len(columns) > 1 else correction
    flat = g.const(g.name("flat"), np.array([-1, n], np.int64))
    left = g.op("Reshape", [left, g.const(g.name("flat"), np.array([-1, len(right)], np.int64))])
    summed = g.op("Gemm", [left, g.const(f"{name}.cb", right), g.op("Reshape", [y, flat])], name)
    return g.op("Reshape", [summed, g.op("Shape", [y])])


def nbits_linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str, level: int = 4) -> str:
    """com.microsoft MatMulNBits, 8 bits, one scale per NBITS_BLOCK weights, zero point 128 (symmetric).

    level: MatMulNBits' accuracy_level, 4 = activations quantized to int8 per block (Q8_0's arithmetic),
    1 = float32 arithmetic on the dequantized weights."""
    n, k = weight.shape
    if k % NBITS_BLOCK:  # no whole blocks: the per-token form instead
        return per_row_asym_linear(g, x, weight, bias, name)
    blocks = weight.reshape(n, k // NBITS_BLOCK, NBITS_BLOCK)
    absmax = np.abs(blocks).max(axis=2)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    q = (np.clip(np.rint(blocks / scale[:, :, None]), -127, 127) + 128).astype(np.uint8)  # [N, blocks, 32]
    inputs = [x, g.const(f"{name}.qb", q), g.const(f"{name}.sc", scale.reshape(-1))]
    attrs = {"K": k, "N": n, "bits": 8, "block_size": NBITS_BLOCK, "accuracy_level": level}
    return _add_bias(g, g.op("MatMulNBits", inputs, name, domain=MS_DOMAIN, **attrs), bias, name)


def nbits_fp32_linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
    return nbits_linear(g, x, weight, bias, name, level=1)


def by_layer(default: Linear, chosen: dict[str, Linear]) -> Linear:
    """A linear writer that picks by the layer's name ending (CONNECTOR, ATTN_OUT, ...), else `default`."""

    def linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        writer = next((w for end, w in chosen.items() if name.endswith(end)), default)
        return writer(g, x, weight, bias, name)

    return linear


def outlier_split(inner: Linear, outliers: dict[str, np.ndarray], fold: bool = False) -> Linear:
    """A linear writer whose layers listed in `outliers` (name -> input channels) read those channels in fp32.

    LLM.int8()'s decomposition with the channels known from the weights (onnx_smooth.layer_outliers): the
    int8 product sees the input with those channels zeroed (one Mul per input, shared by q, k and v) and a
    weight without their columns, so neither the activations' row scale nor the weights' channel scale is set
    by them; a [tokens, few] x [few, out] fp32 product of the gathered channels is added back: by a MatMul and
    an Add, or (fold) by `inner` itself, called with side=(the gathered channels, their weight [few, out])
    (_asym_product's side: in its correction Gemm).
    """
    masked: dict[tuple[str, bytes], tuple[str, str]] = {}  # (input, channels) -> (masked input, gathered channels)

    def linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        channels = outliers.get(name)
        if channels is None:
            return inner(g, x, weight, bias, name)
        key = (x, channels.tobytes())
        if key not in masked:
            mask = np.ones(weight.shape[1], np.float32)
            mask[channels] = 0
            kept = g.op("Mul", [x, g.const(g.name("outlier.mask"), mask)])
            gathered = g.op("Gather", [x, g.const(g.name("outlier.idx"), channels)], axis=-1)
            masked[key] = kept, gathered
        kept, gathered = masked[key]
        rest = weight.copy()
        rest[:, channels] = 0
        few_weight = np.ascontiguousarray(weight[:, channels].T)
        if fold:
            return inner(g, kept, rest, bias, name, side=(gathered, few_weight))
        y = inner(g, kept, rest, bias, name)
        few = g.op("MatMul", [gathered, g.const(f"{name}.outlier.wt", few_weight)])
        return g.op("Add", [y, few], name)

    return linear


_ASYM = per_row_asym_linear
LINEARS: dict[str, Linear] = {
    "asym-fp32-o": by_layer(_ASYM, {CONNECTOR: float_linear, ATTN_OUT: float_linear}),
    "asym-fp32-vo": by_layer(_ASYM, {CONNECTOR: float_linear, ATTN_OUT: float_linear, ATTN_V: float_linear}),
    "asym-fp32-c": by_layer(_ASYM, {CONNECTOR: float_linear}),
    "asym-nbits-o": by_layer(_ASYM, {CONNECTOR: nbits_linear, ATTN_OUT: nbits_linear}),
    "asym-nbits1-o": by_layer(_ASYM, {CONNECTOR: nbits_fp32_linear, ATTN_OUT: nbits_fp32_linear}),
    "asym-nbits-vo": by_layer(_ASYM, {CONNECTOR: float_linear, ATTN_OUT: nbits_linear, ATTN_V: nbits_linear}),
    "per-row-asym": per_row_asym_linear,
    V5_DEFAULT: by_layer(per_row_asym_unfused_linear, {CONNECTOR: float_linear, ATTN_OUT: float_linear}),
    "per-row": per_row_linear,
    "nbits": nbits_linear,
}
# Forms read from the weights themselves: (VisionWeights) -> (the weights the graph is built from, its linear writer)
WeightForm = Callable[[VisionWeights], tuple[VisionWeights, Linear]]
OUTLIER_DEFAULT = "outlier-asym-fp32-o"


def grouped_asym_linear(groups: int) -> Linear:
    """per_row_asym_linear with the input's K split into `groups` equal groups, each quantized with its own per-token
    scale and zero point (and the weight with its own per-channel scale): `groups` MatMulIntegerToFloat whose
    products are summed. A row whose large values sit in a few groups no longer coarsens the others."""

    def linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        k = weight.shape[1]
        if groups <= 1 or k % groups:
            return per_row_asym_linear(g, x, weight, bias, name)
        size = k // groups
        parts = [
            per_row_asym_linear(g, part, weight[:, i * size : (i + 1) * size], bias if i == 0 else None, f"{name}.g{i}")
            for i, part in enumerate(g.split(x, groups, axis=-1))
        ]
        return g.op("Sum", parts, name)

    return linear


def residual_asym_linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
    """per_row_asym_linear plus a second int8 product of what its quantization left: the input is read as about
    15 bits (its rounding error, at most one step, requantized per token, symmetric, in 127 steps of it), the
    weight as int8 per channel. Two int8 products in place of an fp32 one."""
    return _residual_input_linear(g, x, weight, bias, name, weight_twice=False)


def residual_both_linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
    """residual_asym_linear with the weight read as two int8 weights too (residual_weight_linear's second weight,
    multiplied by the first quantized input): three int8 products; the two errors' product is left out."""
    return _residual_input_linear(g, x, weight, bias, name, weight_twice=True)


def _residual_input_linear(g: Graph, x: str, weight: np.ndarray, bias, name: str, weight_twice: bool) -> str:
    k = weight.shape[1]
    wq, w_scale = quantize_weight(weight)
    weight_names = g.const(f"{name}.wq", wq), g.const(f"{name}.ws", w_scale)
    q, row_scale, zero_point = _asym_rows(g, x, k)
    first = _asym_product(g, (q, row_scale, zero_point), weight_names, _column_sums(wq) * w_scale, bias, name)
    if weight_twice:
        first = _second_weight(g, weight, (wq, w_scale), name)((q, row_scale, zero_point), first)
    back = g.op("DequantizeLinear", [q, row_scale, g.op("Cast", [zero_point], to=2)], axis=-1, block_size=k)
    rest_scale = g.op("Div", [row_scale, _f32(g, "q127", 127)])
    mid = g.op("ConstantOfShape", [g.op("Shape", [rest_scale])], value=_uint8(128))
    q2 = g.op("QuantizeLinear", [g.op("Sub", [x, back]), rest_scale, mid], axis=-1, block_size=k)
    one, zero_point2 = _f32(g, "one", 1.0), g.const(g.name("zp"), np.array(128, np.uint8))
    inputs = [q2, weight_names[0], one, weight_names[1], zero_point2]
    second = g.op("Mul", [g.op("MatMulIntegerToFloat", inputs, name, domain=MS_DOMAIN), rest_scale])
    return g.op("Add", [first, second], name)


def residual_weight_linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
    """per_row_asym_linear with the weight read as about 15 bits: its int8 rounding error requantized per channel
    into a second int8 weight, multiplied by the same quantized input. Two int8 products in place of one."""
    return _two_weight_linear(g, x, weight, quantize_weight(weight), bias, name)


def _two_weight_linear(g: Graph, x: str, weight: np.ndarray, first_weight, bias: np.ndarray | None, name: str) -> str:
    """residual_weight_linear with its first int8 weight given (int8 [in, out], scale [out]: nearest rounding, or
    GPTQ's), the second the rounding error that one leaves."""
    wq, w_scale = first_weight
    rows = _asym_rows(g, x, weight.shape[1])
    first_names = g.const(f"{name}.wq", wq), g.const(f"{name}.ws", w_scale)
    plus_second = _second_weight(g, weight, first_weight, name)
    first = _asym_product(g, rows, first_names, _column_sums(wq) * w_scale, bias, name)
    return plus_second(rows, first, name)


def _second_weight(g: Graph, weight: np.ndarray, first_weight, name: str) -> Callable[..., str]:
    """The second int8 weight of `weight` (what first_weight's rounding left, requantized per channel), put in the
    graph now; returns plus(rows, first, base=""): `first` plus the product of _asym_rows' quantized input and it."""
    wq, w_scale = first_weight
    rq, r_scale = quantize_weight(weight - (wq.T.astype(np.float32) * w_scale[:, None]))
    second_names = g.const(f"{name}.rq", rq), g.const(f"{name}.rs", r_scale)

    def plus(rows, first: str, base: str = "") -> str:
        second = _asym_product(g, rows, second_names, _column_sums(rq) * r_scale, None, f"{name}.r")
        return g.op("Add", [first, second], base)

    return plus


def outlier_form(
    inner: Linear,
    outlier_down: Linear | None = float_linear,
    exact_ends: tuple[str, ...] = (),
    sharp_qk: Linear | None = None,
    fold: bool = False,
):
    """The WeightForm of asym-fp32-o-like `inner` with the outlier channels split off; in a layer that has them,
    attn_q and attn_k in fp32 (sharp_qk: split too, the rest written by it), and ffn_down written by `outlier_down`
    where its ffn_up has them (None: `inner`'s, FORMAT_VERSION 7's form). exact_ends: layers `inner` already keeps
    in fp32 everywhere (not split). fold: outlier_split's (inner and sharp_qk then take its side=).

    Where a few channels carry tens of times the rest, q . k's logits are large and the softmax sharp: int8's
    error in q and k, however small, moves it. SmolVLM-256M's shapes with large-gain channels: per-tile cosine
    to fp32 on the probe 0.958 per-row, 0.9983 with the split alone, 0.9996 with q and k in fp32 too. On the
    1024x768 photo the worst tile was still 0.9947, from ffn_down: ffn_up's outputs there are all larger (each
    reads the outlier channels), so GELU's rows are wider and no channel stands out to split off; ffn_down in fp32
    in those layers gives 0.99947 (FORMAT_VERSION 8)."""

    def form(weights: VisionWeights) -> tuple[VisionWeights, Linear]:
        sharp, downs, split = _outlier_layers(weights, outlier_down is not None, exact_ends, sharp_qk is None)

        def linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str, **side) -> str:
            if name in sharp:
                return (sharp_qk or float_linear)(g, x, weight, bias, name, **side)
            if name in downs:  # ffn_down reads GELU's output, never split: no side
                return outlier_down(g, x, weight, bias, name)
            return inner(g, x, weight, bias, name, **side)

        return weights, outlier_split(linear, split, fold)

    return form


def _outlier_layers(
    weights: VisionWeights, own_down: bool, exact_ends: tuple[str, ...] = (), exact_qk: bool = True
) -> tuple[set[str], set[str], dict[str, np.ndarray]]:
    """outlier_form's layer sets: (q and k of the layers with outlier channels, the ffn_down written apart where its
    ffn_up reads them (own_down), the layers whose outlier channels are split off: name -> channels)."""
    outliers = layer_outliers(weights)
    sharp = {name for name in outliers if name.endswith((ATTN_Q, ATTN_K))}
    exact = sharp if exact_qk else set()
    downs = set()
    if own_down:
        downs = {name.removesuffix(FFN_UP) + FFN_DOWN for name in outliers if name.endswith(FFN_UP)}
    split = {name: ch for name, ch in outliers.items() if name not in exact and not name.endswith(exact_ends)}
    return sharp, downs, split


GPTQ_ENDS = (ATTN_Q, ATTN_K, ATTN_V, FFN_UP, FFN_DOWN)  # the layers the default reads as one int8 product
# The default's q and k in the outlier layers (GPTQ_FORMS): split, one GPTQ-rounded int8 product, the first layer's fp32
DEFAULT_QK = "one-first"


def _first_layer_qk(weights: VisionWeights, qk: str | None) -> set[str]:
    """The outlier layers' q and k that a "-first" qk (GPTQ_FORMS) keeps in fp32: the first layer's, if it has them."""
    if qk is None or not qk.endswith("-first"):
        return set()
    return {name for name in _outlier_layers(weights, own_down=False)[0] if name.startswith("v.blk.0.")}


def gptq_targets(
    weights: VisionWeights, qk: str | None = DEFAULT_QK, two_downs: bool = False, int8_out: bool = False
) -> dict[str, np.ndarray | None]:
    """The default form's one-product int8 layers, whose weights GPTQ rounds (onnx_gptq): name -> the input channels
    outlier_split leaves out of its int8 weight (None: none). Not q and k where they run in fp32, nor the ffn_down
    read as two int8 weights (two_downs: in the outlier layers, as format 9 read it), nor attn_out and the connector
    (fp32). qk (GPTQ_FORMS'): the outlier layers' q and k split and int8 instead of fp32, their (first) int8 weight
    rounded too ("one", "two"; "one-first", the default's: not the first layer's, kept in fp32), or in fp32 (None,
    "fp32-cat"). int8_out: attn_out too (one GPTQ-rounded int8 product instead of fp32)."""
    exact_qk = qk in (None, "fp32-cat")  # q and k in fp32 in the outlier layers
    sharp, downs, split = _outlier_layers(weights, own_down=two_downs, exact_qk=exact_qk)
    ends = (*GPTQ_ENDS, ATTN_OUT) if int8_out else GPTQ_ENDS
    names = (f"v.blk.{bid}.{end}" for bid in range(weights.layers) for end in ends)
    fp32 = sharp if exact_qk else _first_layer_qk(weights, qk)
    return {name: split.get(name) for name in names if name not in fp32 and name not in downs}


def gptq_form(
    rounded: Callable[[str], tuple[np.ndarray, np.ndarray] | None],
    qk: str | None = None,
    two_downs: bool = True,
    fold: bool = True,
) -> WeightForm:
    """FORMAT_VERSION 9's graph with the int8 values that `rounded` gives (onnx_gptq.Calibration's:
    int8 [in, out], scale [out]) in place of nearest rounding, for the layers it has them for. qk: as gptq_targets',
    the outlier layers' q and k split with one int8 product ("one") or their weight as two int8 weights ("two":
    GPTQ's rounding the first, the second what it left, rounded to the nearest step); "one-first": as "one" but the
    first layer's q and k in fp32 as the default's (not split). two_downs: the outlier layers' ffn_down as two int8
    weights (format 9's; nearest rounding), else one GPTQ-rounded int8 product as in the other layers (the default's)."""

    def first_weight(weight: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        found = rounded(name)
        if found is not None and found[0].shape != weight.T.shape:
            raise ValueError(f"{name}: rounded weights of shape {found[0].shape}, the layer's is {weight.T.shape}")
        return found

    def linear(
        g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str, side: Side | None = None
    ) -> str:
        found = first_weight(weight, name)
        if found is None:
            if side is None:
                return _O(g, x, weight, bias, name)
            # a split layer not rounded (every one is a GPTQ target, gptq_targets): nearest rounding, as _O's
            found = quantize_weight(weight)
        return _asym_linear_of(g, x, np.asarray(found[0]), found[1], bias, name, side)

    def two_weights(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        found = first_weight(weight, name)
        if found is None:
            return residual_weight_linear(g, x, weight, bias, name)
        return _two_weight_linear(g, x, weight, (np.asarray(found[0]), found[1]), bias, name)

    sharp_qk = {None: None, "one": linear, "two": two_weights, "one-first": linear, "fp32-cat": None}[qk]
    # fold: the outlier channels' fp32 product in the int8 product's correction Gemm, where q and k are not
    # two_weights (which takes no side)
    split_form = outlier_form(
        linear, residual_weight_linear if two_downs else None, sharp_qk=sharp_qk, fold=fold and qk != "two"
    )

    def form(weights: VisionWeights) -> tuple[VisionWeights, Linear]:
        fp32 = _first_layer_qk(weights, qk)
        cat = _outlier_layers(weights, own_down=False)[0] if qk == "fp32-cat" else set()
        weights, split = split_form(weights)
        k_of: dict[str, str] = {}  # attn_k's name -> its half of the q|k product

        def mixed(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
            if name in cat:
                return k_of.pop(name) if name in k_of else _qk_product(g, x, weights, name, k_of)
            return (float_linear if name in fp32 else split)(g, x, weight, bias, name)

        return weights, mixed

    return form


def _qk_product(g: Graph, x: str, weights: VisionWeights, q_name: str, k_of: dict[str, str]) -> str:
    """q and k of one layer as ONE fp32 MatMul of [Wq | Wk] (and their biases), split after: q returned, k put in
    k_of for its own call (build_model writes q before k on the same input)."""
    if not q_name.endswith(ATTN_Q):
        raise ValueError(f"{q_name}: q and k as one product expects attn_q first")
    k_name = q_name.removesuffix(ATTN_Q) + ATTN_K
    t = weights.tensors
    both = np.concatenate([t[f"{q_name}.weight"], t[f"{k_name}.weight"]])
    bias = np.concatenate([t[f"{q_name}.bias"], t[f"{k_name}.bias"]])
    q, k_of[k_name] = g.split(float_linear(g, x, both, bias, q_name.removesuffix(ATTN_Q) + "attn_qk"), 2, axis=-1)
    return q


def _smoothed_form(weights: VisionWeights) -> tuple[VisionWeights, Linear]:
    return smoothed(weights), LINEARS["asym-fp32-o"]


def _int8_attention_form(weights: VisionWeights) -> Attend:
    """Attention's two products in int8 (onnx_attention_int8) in the layers without outlier channels; fp32
    MultiHeadAttention in those with them, where the default form keeps q and k in fp32 too: there q . k's
    logits are large and the softmax sharp, and int8's error in q and k moves it."""
    outliers = layer_outliers(weights)
    sharp = {name[: -len(ATTN_Q)] for name in outliers if name.endswith((ATTN_Q, ATTN_K))}  # "v.blk.3." prefixes

    def attend(g: Graph, p: str, q: str, k: str, v: str, heads: int, head_dim: int, patches: int) -> str:
        if p in sharp:
            return g.op("MultiHeadAttention", [q, k, v], p + "attn", domain=MS_DOMAIN, num_heads=heads)
        return int8_attention(g, q, k, v, heads, head_dim, patches, p)

    return attend


def _last_down_w2_form(weights: VisionWeights) -> tuple[VisionWeights, Linear]:
    """The default with ffn_down's weight as two int8 weights in the last layer too, whatever its outliers."""
    last = f"v.blk.{weights.layers - 1}.{FFN_DOWN}"

    def linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        return (residual_weight_linear if name == last else _O)(g, x, weight, bias, name)

    return outlier_form(linear, residual_weight_linear)(weights)


INT8_ATTENTION = OUTLIER_DEFAULT + "-a8"  # the default form with attention's two products in int8 too


_O = LINEARS["asym-fp32-o"]
# ffn_down's weight read as two int8 weights (residual_weight_linear) in every layer
_O_DOWN_W2 = by_layer(_ASYM, {CONNECTOR: float_linear, ATTN_OUT: float_linear, FFN_DOWN: residual_weight_linear})
FORMS: dict[str, WeightForm] = {
    # the nearest-rounded forms (the default and its GPTQ variants: GPTQ_FORMS, below). FORMAT_VERSION 9, every weight
    # rounded to its nearest int8 step; ffn_down's weight as two int8 weights in the layers whose ffn_up reads
    # outlier channels (FORMAT_VERSION 8 ran those in fp32)
    f"{OUTLIER_DEFAULT}-v9": outlier_form(_O, residual_weight_linear),
    # the same in every layer: on plain tiny checkpoints under Q8_0 on the one case the default misses, but 1.17x
    # the default's time per plain 256M tile (docs/vision-precision.md)
    f"{OUTLIER_DEFAULT}-w2": outlier_form(_O_DOWN_W2, None),
    # the same in the last layer only: under Q8_0 on the 16 cases, but no closer than the default on other seeds
    f"{OUTLIER_DEFAULT}-lw2": _last_down_w2_form,
    f"{OUTLIER_DEFAULT}-v8": outlier_form(_O),
    f"{OUTLIER_DEFAULT}-v7": outlier_form(_O, None),
    INT8_ATTENTION: outlier_form(_O),
    "smooth-asym-fp32-o": _smoothed_form,
    # measured beside the default (docs/vision-precision.md): ffn_down in the outlier layers with its input in
    # groups of K, or as two int8 inputs; its weight as two int8 weights; attn_v or every int8 weight at 15 bits
    **{f"{OUTLIER_DEFAULT}-g{n}": outlier_form(_O, grouped_asym_linear(n)) for n in (2, 4, 8)},
    f"{OUTLIER_DEFAULT}-r2": outlier_form(_O, residual_asym_linear),
    f"{OUTLIER_DEFAULT}-dw2": outlier_form(_O_DOWN_W2),  # the outlier layers' ffn_down in fp32
    f"{OUTLIER_DEFAULT}-qkw2": outlier_form(_O_DOWN_W2, None, sharp_qk=residual_weight_linear),
    # the default with the outlier layers' q and k split, their int8 part read as two int8 inputs (weights one),
    # or as two inputs and two weights, instead of fp32 (issue 21's twin speed; docs/vision-precision.md)
    f"{OUTLIER_DEFAULT}-qkr2": outlier_form(_O, residual_weight_linear, sharp_qk=residual_asym_linear),
    f"{OUTLIER_DEFAULT}-qkb2": outlier_form(_O, residual_weight_linear, sharp_qk=residual_both_linear),
    # the activations' second product in one of the two only
    f"{OUTLIER_DEFAULT}-qw2kb2": outlier_form(
        _O, residual_weight_linear, sharp_qk=by_layer(residual_weight_linear, {ATTN_K: residual_both_linear})
    ),
    f"{OUTLIER_DEFAULT}-qb2kw2": outlier_form(
        _O, residual_weight_linear, sharp_qk=by_layer(residual_weight_linear, {ATTN_Q: residual_both_linear})
    ),
    "outlier-asym-fp32-vo": outlier_form(LINEARS["asym-fp32-vo"], float_linear, (ATTN_V,)),
    f"{OUTLIER_DEFAULT}-allw2": outlier_form(
        by_layer(residual_weight_linear, {CONNECTOR: float_linear, ATTN_OUT: float_linear})
    ),
}


class GptqForm(NamedTuple):
    """A GPTQ_FORMS kind: q and k in the outlier layers (qk): fp32 (None; "fp32-cat": q and k as one fp32 MatMul),
    split with one GPTQ-rounded int8 product ("one"; "one-first", the default: the first layer's in fp32), or split
    with the weight as two int8 weights (GPTQ's the first); two_downs: ffn_down there as two int8 weights (format 9's),
    else one GPTQ-rounded product; fold: the outlier channels' fp32 product in the int8 product's correction Gemm
    (outlier_split's fold), not a MatMul and an Add of its own (the forms measured before the fold have it off, as
    they were measured); int8_out: attn_out one GPTQ-rounded int8 product, not fp32 (gptq_targets')."""

    qk: str | None = DEFAULT_QK
    two_downs: bool = False
    fold: bool = True
    int8_out: bool = False


GPTQ_FORMS: dict[str, GptqForm] = {
    OUTLIER_DEFAULT: GptqForm(),
    # the default before its outlier layers' ffn_down went to one product
    f"{OUTLIER_DEFAULT}-d2": GptqForm(two_downs=True, fold=False),
    # format 10 as first written: fp32 q and k in every outlier layer
    f"{OUTLIER_DEFAULT}-qk32": GptqForm(None, two_downs=True, fold=False),
    f"{OUTLIER_DEFAULT}-qk1g": GptqForm("one", two_downs=True, fold=False),
    f"{OUTLIER_DEFAULT}-qkw2g": GptqForm("two", two_downs=True, fold=False),
    f"{OUTLIER_DEFAULT}-qkcat": GptqForm("fp32-cat", two_downs=True, fold=False),
    f"{OUTLIER_DEFAULT}-sep": GptqForm(fold=False),  # the default before the fold
    f"{OUTLIER_DEFAULT}-o8": GptqForm(int8_out=True),  # the default with attn_out in int8
}
INT8_KINDS = (*GPTQ_FORMS, *FORMS, *LINEARS, "dynamic")  # the default first
ATTENTION_OF = {V5_DEFAULT: "matmul"}  # a kind that fixes its attention (the graph as FORMAT_VERSION 5 wrote it)
ATTENTION_FORMS: dict[str, Callable[[VisionWeights], Attend]] = {INT8_ATTENTION: _int8_attention_form}


def _uint8(value: int):
    from smolcli.runtime.vision import onnx_proto

    return onnx_proto.tensor(np.array([value], np.uint8))


def build_int8(
    weights: VisionWeights,
    kind: str,
    attention: str | Attend = ATTENTION,
    weights_file: WeightsFile | None = None,
    rounded: Callable[[str], tuple[np.ndarray, np.ndarray] | None] | None = None,
):
    """The int8 ModelProto of this kind (see INT8_KINDS), attention as onnx_graph.ATTENTIONS; weights_file as
    onnx_graph.build_model's ("dynamic", ORT's own quantizer, reads every weight from the proto: built in memory).
    rounded: a GPTQ_FORMS kind's rounded weights (onnx_gptq.Calibration.rounded, whose fp32 run the self-check
    reuses); without them the kind calibrates here (one layered fp32 run of the probe tiles)."""
    if kind == "dynamic":  # its quantizer's shape inference cannot see through MultiHeadAttention
        return quantize_dynamic_model(build_model(weights, attention="matmul"))
    if kind in GPTQ_FORMS and rounded is None:
        from smolcli.runtime.vision.onnx_gptq import calibrated

        form = GPTQ_FORMS[kind]
        with calibrated(weights, gptq_targets(weights, form.qk, form.two_downs, form.int8_out)) as (calibration, _):
            return build_int8(weights, kind, attention, weights_file, calibration.rounded)
    if kind in GPTQ_FORMS:
        form = GPTQ_FORMS[kind]
        weights, linear = gptq_form(rounded, form.qk, form.two_downs, form.fold)(weights)
    elif kind in FORMS:
        weights, linear = FORMS[kind](weights)
    elif kind in LINEARS:
        linear = LINEARS[kind]
    else:
        raise ValueError(f"unknown int8 kind {kind!r}")
    attention = ATTENTION_FORMS[kind](weights) if kind in ATTENTION_FORMS else ATTENTION_OF.get(kind, attention)
    return build_model(weights, linear, opset=PER_ROW_OPSET, attention=attention, weights_file=weights_file)


def quantize_dynamic_model(model):
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save(model, source)
        quantize_dynamic(source, target, per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        return onnx.load(target)
