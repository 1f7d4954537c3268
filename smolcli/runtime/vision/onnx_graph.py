"""SmolVLM's vision encoder + connector as an ONNX graph, built from the mmproj GGUF's own tensors (no torch).

The graph is transformers' Idefics3 vision path for whole tiles: SigLIP patch convolution, learned
positions (0..n-1: every tile is full-size, so the bucketed fractional positions are the identity),
pre-norm encoder layers (tanh GELU), post-layernorm, the connector's pixel shuffle exactly as
Idefics3Connector.pixel_shuffle reshapes it, and the bias-free projection. Input `pixel_values`
[tiles, 3, S, S] (already rescaled and normalized), output `embeddings` [tiles, tokens, text width].

Linear layers go through `linear()`, so that onnx_int8 can write the same graph with int8 weights;
attention is onnxruntime's MultiHeadAttention (or, for comparison, plain MatMul / Softmax / MatMul).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from smolcli.errors import ModelFileError
from smolcli.models.smolvlm import VISION_TENSORS, vision_shapes

OPSET = 20  # Gelu(approximate="tanh") and LayerNormalization
IDEFICS3 = "idefics3"
KEY = gguf.Keys.ClipVision


@dataclass
class VisionWeights:
    """What the graph needs from an mmproj: float32 numpy arrays in Hugging Face layout, and the shapes."""

    tile: int
    patch: int
    width: int
    heads: int
    layers: int
    eps: float
    scale_factor: int
    mean: list[float]
    std: list[float]
    longest_edge: int
    tensors: "DequantizedTensors" = field(repr=False, default=None)

    @property
    def grid(self) -> int:
        return self.tile // self.patch

    @property
    def tokens(self) -> int:
        return self.grid**2 // self.scale_factor**2


def _field(reader: gguf.GGUFReader, key: str):
    found = reader.fields.get(key)
    return None if found is None else found.contents()


class DequantizedTensors(Mapping):
    """The mmproj's tensors by name, each dequantized to float32 when it is read and not kept.

    The graph reads every tensor once and keeps only its own (int8 or float32) copy: holding all of
    them in float32 at once would be 4 bytes per vision parameter (1.7 GB for 2.2B) on top of it.
    A tensor's bytes are read from the file into a buffer of its own, not through the reader's mapping: each page
    of the mapping read stays resident while the reader lives (the whole mmproj by the end of a build, 100 MB of
    a first run's peak on 256M).
    """

    def __init__(self, reader: gguf.GGUFReader, path: Path):
        self._tensors = {t.name: t for t in reader.tensors}
        self._path = path

    def __getitem__(self, name: str) -> np.ndarray:
        t = self._tensors[name]
        with open(self._path, "rb") as file:  # t.data's shape and type only: its mapped pages are not read
            file.seek(t.data_offset)
            raw = np.fromfile(file, dtype=t.data.dtype, count=t.data.size).reshape(t.data.shape)
        if raw.size != t.data.size:
            raise ModelFileError(f"{self._path}: tensor {name} is cut short", path=self._path)
        return gguf.quants.dequantize(raw, t.tensor_type).astype(np.float32, copy=False)

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def shape(self, name: str) -> tuple[int, ...] | None:
        t = self._tensors.get(name)
        return None if t is None else tuple(int(n) for n in reversed(t.shape))  # GGUF lists ne, innermost first


def read_vision_weights(path: Path) -> VisionWeights:
    """The mmproj's vision tensors dequantized to float32; ModelFileError when it is no idefics3 projector."""
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as error:
        raise ModelFileError(f"{path}: not a readable GGUF file ({error})", path=path) from None
    projector = _field(reader, KEY.PROJECTOR_TYPE) or _field(reader, gguf.Keys.Clip.PROJECTOR_TYPE)
    if projector != IDEFICS3:
        raise ModelFileError(f"{path}: its projector is {projector!r}, not {IDEFICS3!r} (SmolVLM)", path=path)
    numbers = {
        "tile": KEY.IMAGE_SIZE,
        "patch": KEY.PATCH_SIZE,
        "width": KEY.EMBEDDING_LENGTH,
        "heads": KEY.Attention.HEAD_COUNT,
        "layers": KEY.BLOCK_COUNT,
        "scale_factor": KEY.Projector.SCALE_FACTOR,
        "longest_edge": KEY.PREPROC_IMAGE_SIZE,
    }
    if _field(reader, KEY.USE_GELU) is False or _field(reader, KEY.USE_SILU):
        raise ModelFileError(f"{path}: its encoder's activation is not tanh GELU, which the ONNX graph has", path=path)
    values = {name: _field(reader, key) for name, key in numbers.items()}
    missing = [numbers[name] for name, value in values.items() if value is None]
    if missing:
        raise ModelFileError(f"{path}: lacks {', '.join(missing)}", path=path)
    tensors = DequantizedTensors(reader, path)
    weights = VisionWeights(
        **{name: int(value) for name, value in values.items()},
        eps=float(_field(reader, KEY.Attention.LAYERNORM_EPS) or 1e-6),
        mean=[float(x) for x in _field(reader, KEY.IMAGE_MEAN)],
        std=[float(x) for x in _field(reader, KEY.IMAGE_STD)],
        tensors=tensors,
    )
    check_shapes(path, weights)
    return weights


def expected_shapes(w: VisionWeights) -> dict[str, tuple[int, ...]]:
    """The family's own vision shapes (models/smolvlm.py), under the mmproj's tensor names."""
    ffn = (w.tensors.shape("v.blk.0.ffn_up.weight") or (0,))[0]
    text_hidden = (w.tensors.shape("mm.model.fc.weight") or (0,))[0]
    vision = {"hidden_size": w.width, "intermediate_size": ffn, "patch_size": w.patch, "image_size": w.tile}
    shapes = vision_shapes(vision | {"num_channels": 3}, w.scale_factor, text_hidden)
    expected = {}
    for hf_name, shape in shapes.items():
        name = VISION_TENSORS[hf_name]
        for bid in range(w.layers) if "{bid}" in name else [0]:
            expected[name.format(bid=bid)] = shape
    return expected


def check_shapes(path: Path, w: VisionWeights) -> None:
    # a tile need not be a whole number of patches: 2.2B's 384 px in 14 px patches gives 27 x 27, as the
    # patch convolution (no padding, stride = patch) leaves the last 6 px out in transformers too
    if w.grid % w.scale_factor or w.width % w.heads:
        raise ModelFileError(f"{path}: odd vision shapes (tile {w.tile}, patch {w.patch}, width {w.width})", path=path)
    for name, shape in expected_shapes(w).items():
        found = w.tensors.shape(name)
        if found != shape:
            got = "missing" if found is None else found
            raise ModelFileError(f"{path}: tensor {name} is {got}, expected {shape}", path=path)


IR_VERSION = 10  # the ONNX IR version the graphs declare

# A linear layer writer: (graph, input name, weight [out, in], bias or None, node name) -> output name.
Linear = Callable[["Graph", str, np.ndarray, "np.ndarray | None", str], str]


class WeightsFile:
    """Initializers written to the external data file as the graph is built, so that a build never holds the
    model's weights: the graph keeps each large tensor's offset and length only (onnx's external data layout).
    Built whole in memory and then saved, a first run peaked at 0.60 GB against 0.31 GB for later runs on 256M.
    """

    INLINE_BYTES = 1024  # smaller tensors (shapes, scalars) stay in the graph, as onnx.save's size_threshold
    ALIGN = 64 * 1024  # large tensors start on a boundary ORT can map; onnx's largest allowed padding

    def __init__(self, path: Path):
        self.path = path
        self.file = path.open("wb")

    def tensor(self, name: str, array: np.ndarray):
        from smolcli.runtime.vision import onnx_proto

        if array.nbytes < self.INLINE_BYTES:
            return onnx_proto.tensor(array, name)
        offset = self.file.seek(0, os.SEEK_END)
        if array.nbytes >= self.ALIGN and offset % self.ALIGN:
            offset = self.file.seek(offset + self.ALIGN - offset % self.ALIGN)
        self.file.write(array.astype(array.dtype.newbyteorder("<"), copy=False).data)
        tensor_proto = onnx_proto.messages().TensorProto
        tensor = tensor_proto(name=name, data_type=onnx_proto.element_type(array.dtype), dims=array.shape)
        tensor.data_location = tensor_proto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", offset), ("length", array.nbytes)):
            tensor.external_data.add(key=key, value=str(value))
        return tensor

    def close(self) -> None:
        self.file.close()


class Graph:
    """A small helper over onnx_proto: named constants, nodes, fresh names. With a WeightsFile, large constants
    go to that file as they are made."""

    def __init__(self, weights_file: WeightsFile | None = None):
        self.nodes: list = []
        self.initializers: list = []
        self.weights_file = weights_file
        self._count = 0

    def name(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, name: str, array: np.ndarray) -> str:
        from smolcli.runtime.vision import onnx_proto

        array = np.ascontiguousarray(array)
        if self.weights_file is not None:
            self.initializers.append(self.weights_file.tensor(name, array))
        else:
            self.initializers.append(onnx_proto.tensor(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str = "", **attrs) -> str:
        from smolcli.runtime.vision import onnx_proto

        out = self.name(base or op_type.lower())
        self.nodes.append(onnx_proto.node(op_type, inputs, [out], name=out, **attrs))
        return out

    def split(self, x: str, parts: int, axis: int) -> list[str]:
        from smolcli.runtime.vision import onnx_proto

        base = self.name("split")
        outs = [f"{base}_{i}" for i in range(parts)]
        self.nodes.append(onnx_proto.node("Split", [x], outs, name=base, axis=axis, num_outputs=parts))
        return outs


# The largest float32 weight matrix one MatMul gets. ORT holds each initializer twice for a moment while it
# packs it at load (the read copy and MLAS's packed one): the connector's projection, 28 MB on 256M and 85 MB
# on 2.2B, set the session's load peak. In pieces along K, the pieces are packed one after another.
FLOAT_PIECE_BYTES = 8 * 2**20


def float_pieces(k: int, n: int) -> int:
    """How many equal pieces along K a [K, N] float32 weight is split into: the fewest within FLOAT_PIECE_BYTES."""
    return next((c for c in range(1, k + 1) if k % c == 0 and (k // c) * n * 4 <= FLOAT_PIECE_BYTES), k)


def float_linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
    w_t = weight.T.astype(np.float32)
    pieces = float_pieces(*w_t.shape)
    if pieces == 1:
        y = g.op("MatMul", [x, g.const(f"{name}.wt", w_t)], name)
    else:  # x's K split the same way: the sum of the pieces' products
        rows = len(w_t) // pieces
        products = [
            g.op("MatMul", [part, g.const(f"{name}.wt{i}", w_t[i * rows : (i + 1) * rows])], name)
            for i, part in enumerate(g.split(x, pieces, axis=-1))
        ]
        y = g.op("Sum", products, name)
    return g.op("Add", [y, g.const(f"{name}.b", bias.astype(np.float32))], name) if bias is not None else y


# The name every encoder layer's last node (its second residual Add) starts with, after the layer's own prefix:
# onnx_probe cuts the fp32 graph there to run it a layer at a time.
LAYER_END = "res2"

HEADS_PER_GROUP = 2  # attention scores held at once: 2 heads x tokens^2 floats (8 MiB on 256M's 1024 patches)


def attention_groups(heads: int) -> int:
    """How many groups the heads are split into: HEADS_PER_GROUP each, or all at once when they do not divide."""
    return heads // HEADS_PER_GROUP if heads % HEADS_PER_GROUP == 0 and heads > HEADS_PER_GROUP else 1


MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib ops (MultiHeadAttention, MatMulNBits)
# "mha": com.microsoft MultiHeadAttention, q, k, v [tiles, patches, width] straight from the linears; ORT's CPU
# kernel runs it as flash attention (MLAS: blocks of keys, an online softmax), so no [patches, patches] scores
# are held (256M: 19 MB less per run) and no transposes are written. "matmul": plain ONNX ops (MatMul, Softmax,
# MatMul), a few heads at a time: FORMAT_VERSION 5's graph, and what onnxruntime's quantize_dynamic can read.
ATTENTIONS = ("mha", "matmul")
ATTENTION = "mha"
# Or attention written by a function (onnx_int8's int8 attention): (graph, layer prefix, q, k, v [tiles, patches,
# width], heads, head_dim, patches) -> the [tiles, patches, width] context.
Attend = Callable[["Graph", str, str, str, str, int, int, int], str]


def grouped_attention(g: Graph, h: str, p: str, heads: int, head_dim: int, linear: Linear, t, shape) -> str:
    """[tiles, patches, width] context of one layer, as MatMul / Softmax / MatMul over head groups."""

    def heads_of(name: str) -> str:
        y = linear(g, h, t[f"{p}{name}.weight"], t[f"{p}{name}.bias"], p + name)
        return g.op("Transpose", [g.op("Reshape", [y, shape(0, -1, heads, head_dim)])], perm=[0, 2, 1, 3])

    scale = g.const(g.name("attn.scale"), np.array(head_dim**-0.5, dtype=np.float32))
    q = g.op("Mul", [heads_of("attn_q"), scale])  # scaled before the product: on [tokens, head] not [tokens, tokens]
    k_t = g.op("Transpose", [heads_of("attn_k")], perm=[0, 1, 3, 2])
    v = heads_of("attn_v")
    groups = attention_groups(heads)
    # a few heads at a time, in node order: only one group's [tokens, tokens] scores are alive at once
    contexts = [
        g.op("MatMul", [g.op("Softmax", [g.op("MatMul", [q_g, k_g])], axis=-1), v_g])
        for q_g, k_g, v_g in zip(g.split(q, groups, 1), g.split(k_t, groups, 1), g.split(v, groups, 1), strict=True)
    ]
    context = g.op("Concat", contexts, axis=1) if groups > 1 else contexts[0]
    width = heads * head_dim
    return g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), shape(0, -1, width)])


def qkv(g: Graph, h: str, p: str, linear: Linear, t) -> tuple[str, str, str]:
    return tuple(linear(g, h, t[f"{p}{n}.weight"], t[f"{p}{n}.bias"], p + n) for n in ("attn_q", "attn_k", "attn_v"))


def multi_head_attention(g: Graph, h: str, p: str, heads: int, linear: Linear, t) -> str:
    """[tiles, patches, width] context of one layer through com.microsoft MultiHeadAttention (scale 1/sqrt(head))."""
    return g.op("MultiHeadAttention", list(qkv(g, h, p, linear, t)), p + "attn", domain=MS_DOMAIN, num_heads=heads)


def build_model(
    w: VisionWeights,
    linear: Linear = float_linear,
    opset: int = OPSET,
    attention: str | Attend = ATTENTION,
    weights_file: WeightsFile | None = None,
):
    """The ONNX ModelProto of the encoder + connector; attention one of ATTENTIONS or an Attend function. With
    weights_file, its large initializers are in that file (save the proto beside it, as is), else all in the proto."""
    from smolcli.runtime.vision import onnx_proto

    if not callable(attention) and attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}, not one of {ATTENTIONS}")

    g = Graph(weights_file)
    t = w.tensors
    width, heads, grid, s = w.width, w.heads, w.grid, w.scale_factor
    head_dim = width // heads

    def shape(*dims: int) -> str:
        return g.const(g.name("shape"), np.array(dims, dtype=np.int64))

    def layer_norm(x: str, prefix: str) -> str:
        scale, bias = g.const(f"{prefix}.weight", t[f"{prefix}.weight"]), g.const(f"{prefix}.bias", t[f"{prefix}.bias"])
        return g.op("LayerNormalization", [x, scale, bias], prefix, axis=-1, epsilon=w.eps)

    # patches: Conv stride=patch, [N, W, g, g] -> [N, g*g, W] (+ positions)
    patch_bias = t.get("v.patch_embd.bias", np.zeros(width, np.float32))
    conv = g.op(
        "Conv",
        ["pixel_values", g.const("patch.w", t["v.patch_embd.weight"]), g.const("patch.b", patch_bias)],
        "patch",
        kernel_shape=[w.patch, w.patch],
        strides=[w.patch, w.patch],
    )
    x = g.op("Transpose", [g.op("Reshape", [conv, shape(0, width, grid * grid)])], perm=[0, 2, 1])
    x = g.op("Add", [x, g.const("positions", t["v.position_embd.weight"])], "embed")
    for bid in range(w.layers):
        p = f"v.blk.{bid}."
        h = layer_norm(x, p + "ln1")
        if callable(attention):
            context = attention(g, p, *qkv(g, h, p, linear, t), heads, head_dim, grid * grid)
        elif attention == "mha":
            context = multi_head_attention(g, h, p, heads, linear, t)
        else:
            context = grouped_attention(g, h, p, heads, head_dim, linear, t, shape)
        attn = linear(g, context, t[p + "attn_out.weight"], t[p + "attn_out.bias"], p + "attn_out")
        x = g.op("Add", [x, attn], p + "res1")
        h = layer_norm(x, p + "ln2")
        h = linear(g, h, t[p + "ffn_up.weight"], t[p + "ffn_up.bias"], p + "ffn_up")
        h = g.op("Gelu", [h], p + "gelu", approximate="tanh")
        h = linear(g, h, t[p + "ffn_down.weight"], t[p + "ffn_down.bias"], p + "ffn_down")
        x = g.op("Add", [x, h], p + LAYER_END)
    x = layer_norm(x, "v.post_ln")
    # Idefics3Connector.pixel_shuffle, step by step
    x = g.op("Reshape", [x, shape(0, grid, grid // s, width * s)])
    x = g.op("Transpose", [x], perm=[0, 2, 1, 3])
    x = g.op("Reshape", [x, shape(0, grid // s, grid // s, width * s * s)])
    x = g.op("Transpose", [x], perm=[0, 2, 1, 3])
    x = g.op("Reshape", [x, shape(0, grid * grid // (s * s), width * s * s)])
    out = linear(g, x, t["mm.model.fc.weight"], None, "mm.model.fc")
    g.nodes.append(onnx_proto.node("Identity", [out], ["embeddings"], name="embeddings"))
    n_embd = t.shape("mm.model.fc.weight")[0]
    float32 = onnx_proto.messages().TensorProto.FLOAT
    graph = onnx_proto.graph(
        g.nodes,
        "smolvlm_vision",
        [onnx_proto.value_info("pixel_values", float32, ["tiles", 3, w.tile, w.tile])],
        [onnx_proto.value_info("embeddings", float32, ["tiles", w.tokens, n_embd])],
        g.initializers,
    )
    opsets = [onnx_proto.opset("", opset)]
    if any(node.domain == MS_DOMAIN for node in g.nodes):
        opsets.append(onnx_proto.opset(MS_DOMAIN, 1))
    return onnx_proto.model(graph, opsets, ir_version=IR_VERSION)
