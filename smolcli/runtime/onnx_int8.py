"""int8 forms of the vision graph (onnx_graph): how each linear layer is quantized.

- "dynamic": onnxruntime's quantize_dynamic, QInt8 per-channel weights. One activation scale per
  tensor: fast, but on SigLIP's activations (a few large outliers per token) about twice as far
  from the reference as llama.cpp's Q8_0 (one scale per 32 values).
- "per-row": int8 per-channel weights written directly, activations quantized per token (one
  scale per row, symmetric, stored as uint8 with zero point 128 so MatMulInteger runs MLAS's
  u8s8 kernel), the int32 product rescaled by row x column scales. A token's outliers no longer
  flatten every other token's values.
"""

from __future__ import annotations

import numpy as np

from smolcli.runtime.onnx_graph import Graph, VisionWeights, build_model

INT8_KINDS = ("per-row", "dynamic")
PER_ROW_OPSET = 21  # blocked QuantizeLinear


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight [out, in] -> (int8 [in, out], float32 scale [out]): symmetric, one scale per output channel."""
    absmax = np.abs(weight).max(axis=1)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q.T), scale


def per_row_linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
    wq, w_scale = quantize_weight(weight)
    axes = g.const(g.name("axes"), np.array([-1], np.int64))
    absmax = g.op("ReduceMax", [g.op("Abs", [x]), axes], keepdims=1)  # [..., tokens, 1]
    tiny, q127 = g.const(g.name("tiny"), np.array(1e-12, np.float32)), g.const(g.name("q127"), np.float32(127))
    row_scale = g.op("Div", [g.op("Max", [absmax, tiny]), q127])
    zero_points = g.op("ConstantOfShape", [g.op("Shape", [row_scale])], value=_uint8(128))
    # blocked QuantizeLinear (opset 21), one block per row: one fused pass instead of Div, Round, Add, Cast
    q = g.op("QuantizeLinear", [x, row_scale, zero_points], axis=-1, block_size=weight.shape[1])
    zero_point = g.const(g.name("zp"), np.array(128, np.uint8))
    product = g.op("MatMulInteger", [q, g.const(f"{name}.wq", wq), zero_point], name)
    y = g.op("Mul", [g.op("Cast", [product], to=1), row_scale])
    y = g.op("Mul", [y, g.const(f"{name}.ws", w_scale)])
    return g.op("Add", [y, g.const(f"{name}.b", bias.astype(np.float32))]) if bias is not None else y


def _uint8(value: int):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array([value], np.uint8))


def build_int8(weights: VisionWeights, kind: str):
    """The int8 ModelProto of this kind (see INT8_KINDS)."""
    if kind == "per-row":
        return build_model(weights, per_row_linear, opset=PER_ROW_OPSET)
    if kind == "dynamic":
        return quantize_dynamic_model(build_model(weights))
    raise ValueError(f"unknown int8 kind {kind!r}")


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
