"""Attention's two products (q . k^T and softmax x v) in int8, as ONNX Runtime's MatMulIntegerToFloat.

fp32 MultiHeadAttention is a fused flash kernel at about 90 GMAC/s; the int8 products run at several times
that, but ORT has no fused int8 attention on the CPU, so the [heads, patches, patches] scores are written
out between the products. They are made a few heads at a time (onnx_graph.attention_groups) so that one
group's scores stay small, and every elementwise step on them is one of ORT's fast paths (Softmax, a
last-axis ReduceMax, a last-axis blocked QuantizeLinear).

How each operand is quantized, within what MatMulIntegerToFloat takes (A's scale and zero point are scalars,
B's may be one per column):
- q (A of q . k^T): one scale per head (the largest |q| of the head), uint8 with zero point 128;
- k (B): one scale per patch and head, int8 symmetric; the column scales also carry q's head scale and
  1/sqrt(head_dim);
- the softmax (A of softmax x v): one scale per row (its largest weight maps to 255), uint8;
- v (B): one scale per channel, int8 symmetric, with a column of ones appended: the product's last column is
  the quantized weights' row sum, and dividing by it normalizes the rows (so each row's own scale cancels, and
  the quantized weights sum to one exactly).
"""

from __future__ import annotations

import numpy as np

from smolcli.runtime.vision.onnx_graph import MS_DOMAIN, Graph, attention_groups

INT8 = 3  # onnx TensorProto's element type, for Cast
PRODUCT = "attn_int8"  # in the two products' node names: bench.onnx_profile tells them from the linears by it


def _absmax_scale(g: Graph, x: str, axes: tuple[int, ...], keepdims: int) -> str:
    """max |x| over `axes` / 127: a symmetric int8 scale (never 0)."""
    axes_name = g.const(g.name("axes"), np.array(axes, np.int64))
    absmax = g.op("ReduceMax", [g.op("Abs", [x]), axes_name], keepdims=keepdims)
    tiny, levels = g.const(g.name("tiny"), np.array(1e-12, np.float32)), g.const(g.name("q127"), np.float32(127))
    return g.op("Div", [g.op("Max", [absmax, tiny]), levels])


def _split_heads(g: Graph, x: str, groups: int) -> list[str]:
    return g.split(x, groups, axis=1) if groups > 1 else [x]


def int8_attention(g: Graph, q: str, k: str, v: str, heads: int, head_dim: int, patches: int, layer: str = "") -> str:
    """[tiles, patches, width] context of q, k, v [tiles, patches, width] (the linears' outputs); the products'
    nodes are named layer + PRODUCT."""
    width = heads * head_dim

    def shape(*dims: int) -> str:
        return g.const(g.name("shape"), np.array(dims, np.int64))

    def to_heads(x: str, perm: list[int]) -> str:
        return g.op("Transpose", [g.op("Reshape", [x, shape(0, patches, heads, head_dim)])], perm=perm)

    one = g.const(g.name("one"), np.array(1.0, np.float32))
    # q: [tiles, patches, heads, head], one scale per head (and tile), then uint8 around 128
    q4 = g.op("Reshape", [q, shape(0, patches, heads, head_dim)])
    q_scale = _absmax_scale(g, q4, (1, 3), 1)  # [tiles, 1, heads, 1]
    q_zero = g.const(g.name("zp128"), np.array(128, np.uint8))
    q8 = g.op("Transpose", [g.op("QuantizeLinear", [g.op("Div", [q4, q_scale]), one, q_zero])], perm=[0, 2, 1, 3])
    # k: one scale per patch and head (a last-axis blocked QuantizeLinear over each head's channels)
    k_scale = _absmax_scale(g, g.op("Reshape", [k, shape(0, patches, heads, head_dim)]), (3,), 0)  # [t, patches, heads]
    k_zero = g.op("Cast", [g.op("Mul", [k_scale, g.const(g.name("zero"), np.float32(0))])], to=INT8)
    k8 = g.op("QuantizeLinear", [k, k_scale, k_zero], axis=2, block_size=head_dim)
    k8 = to_heads(k8, [0, 2, 3, 1])  # [tiles, heads, head, patches]
    column_scale = g.op(
        "Mul",
        [
            g.op("Reshape", [g.op("Transpose", [k_scale], perm=[0, 2, 1]), shape(0, heads, 1, patches)]),
            g.op(
                "Mul",
                [
                    g.op("Transpose", [q_scale], perm=[0, 2, 1, 3]),
                    g.const(g.name("attn.scale"), np.float32(head_dim**-0.5)),
                ],
            ),
        ],
    )  # [tiles, heads, 1, patches]
    # v: one scale per channel, and a column of ones (the row sums of the quantized softmax)
    v_scale = _absmax_scale(g, v, (1,), 1)  # [tiles, 1, width]
    v8 = g.op("QuantizeLinear", [g.op("Div", [v, v_scale]), one, g.const(g.name("zp0"), np.array(0, np.int8))])
    v8 = to_heads(v8, [0, 2, 1, 3])  # [tiles, heads, patches, head]
    ones_shape = g.op("Concat", [g.op("Shape", [v8], end=3), shape(1)], axis=0)
    ones = g.op("Expand", [g.const(g.name("ones"), np.ones((1, 1, 1, 1), np.int8)), ones_shape])
    v8 = g.op("Concat", [v8, ones], axis=-1)  # [tiles, heads, patches, head + 1]
    v_columns = g.op("Reshape", [v_scale, shape(0, heads, 1, head_dim)])
    ones_scale = g.op("Expand", [one, g.op("Concat", [g.op("Shape", [v_columns], end=3), shape(1)], axis=0)])
    v_columns = g.op("Concat", [v_columns, ones_scale], axis=-1)  # [tiles, heads, 1, head + 1]

    groups = attention_groups(heads)
    levels = g.const(g.name("q255"), np.float32(255))
    last = g.const(g.name("axes"), np.array([-1], np.int64))
    contexts = []
    for q_g, k_g, c_g, v_g, s_g in zip(
        *(_split_heads(g, x, groups) for x in (q8, k8, column_scale, v8, v_columns)), strict=True
    ):
        scores = g.op("MatMulIntegerToFloat", [q_g, k_g, one, c_g, q_zero], layer + PRODUCT, domain=MS_DOMAIN)
        weights = g.op("Softmax", [scores], axis=-1)
        row_scale = g.op("Div", [g.op("ReduceMax", [weights, last], keepdims=1), levels])
        weights8 = g.op("QuantizeLinear", [weights, row_scale], axis=3, block_size=patches)  # uint8, zero point 0
        contexts.append(g.op("MatMulIntegerToFloat", [weights8, v_g, one, s_g], layer + PRODUCT, domain=MS_DOMAIN))
    summed = g.op("Concat", contexts, axis=1) if groups > 1 else contexts[0]  # [tiles, heads, patches, head + 1]
    numerator = g.op("Slice", [summed, shape(0), shape(head_dim), shape(3)])
    denominator = g.op("Slice", [summed, shape(head_dim), shape(head_dim + 1), shape(3)])
    context = g.op("Div", [numerator, denominator])
    return g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), shape(0, patches, width)])
