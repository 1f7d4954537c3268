"""Where the int8 vision encoder's error comes from: by layer kind, weights against activations.

    python benchmarks/int8_error_sources.py [--tiles 2]

Each variant is the fp32 ONNX graph (onnx_graph) with some linear layers fake-quantized (weights
rounded in numpy, activations rounded in the graph: the arithmetic of int8 without its kernels), and
its embeddings are compared with the fp32 graph's on the same pixels: relative error
||d|| / ||fp32||. The errors of independent layers add in squares, so "share" is each one's squared
error over the sum. Shapes: the tiny SmolVLM and SmolVLM2 test checkpoints and SmolVLM-256M's real
shapes (random weights, the bench's 1024x768 photo). Weights: "channel" is one scale per output row
(what MatMulInteger takes), "block32" Q8_0's one per 32; activations: "row" one absmax scale per
token, "row-asym" each token's min and max, "block32" Q8_0's, "tensor" quantize_dynamic's one for all.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

KINDS = {
    "attn_q": "attn_q",
    "attn_k": "attn_k",
    "attn_v": "attn_v",
    "attn_out": "attn_out",
    "fc1": "ffn_up",
    "fc2": "ffn_down",
    "connector": "mm.model.fc",
}
EVERYWHERE = [
    ("per-row (channel / row)", "channel", "row"),
    ("per-row-asym (channel / row-asym)", "channel", "row-asym"),
    ("quantize_dynamic (channel / tensor)", "channel", "tensor"),
    ("Q8_0's (block32 / block32)", "block32", "block32"),
    ("weights only, channel", "channel", None),
    ("weights only, block32", "block32", None),
    ("activations only, row", None, "row"),
    ("activations only, row-asym", None, "row-asym"),
    ("activations only, block32", None, "block32"),
]


def fake_weight(weight: np.ndarray, mode: str | None) -> np.ndarray:
    if mode is None:
        return weight
    rows, k = weight.shape
    block = k if mode == "channel" else min(32, k)
    blocks = weight.reshape(rows, k // block, block)
    scale = np.abs(blocks).max(axis=2, keepdims=True) / 127
    scale = np.where(scale > 0, scale, 1)
    return (np.clip(np.rint(blocks / scale), -127, 127) * scale).reshape(rows, k).astype(np.float32)


def fake_activations(g, x: str, mode: str | None, k: int) -> str:
    if mode is None:
        return x

    def c(value):
        return g.const(g.name("c"), np.array(value, np.float32))

    axes = None if mode == "tensor" else g.const(g.name("axes"), np.array([-1], np.int64))
    if mode in ("tensor", "row-asym"):  # uint8 with a zero point, the range holding 0
        reduce = [x] if axes is None else [x, axes]
        low = g.op("Min", [g.op("ReduceMin", reduce, keepdims=int(axes is not None)), c(0.0)])
        high = g.op("Max", [g.op("ReduceMax", reduce, keepdims=int(axes is not None)), c(0.0)])
        scale = g.op("Max", [g.op("Div", [g.op("Sub", [high, low]), c(255.0)]), c(1e-12)])
        zero = g.op("Round", [g.op("Div", [g.op("Neg", [low]), scale])])
        q = g.op("Clip", [g.op("Add", [g.op("Round", [g.op("Div", [x, scale])]), zero]), c(0.0), c(255.0)])
        return g.op("Mul", [g.op("Sub", [q, zero]), scale])
    y = x
    if mode == "block32":
        y = g.op("Reshape", [x, g.const(g.name("s"), np.array([0, 0, k // 32, 32], np.int64))])
    scale = g.op("Div", [g.op("Max", [g.op("ReduceMax", [g.op("Abs", [y]), axes], keepdims=1), c(1e-12)]), c(127.0)])
    q = g.op("Mul", [g.op("Round", [g.op("Div", [y, scale])]), scale])
    if mode == "block32":
        q = g.op("Reshape", [q, g.const(g.name("s"), np.array([0, 0, k], np.int64))])
    return q


def fake_linear(weight_mode, activation_mode, only: str | None = None):
    from smolcli.runtime.vision.onnx_graph import float_linear

    def linear(g, x, weight, bias, name):
        if only is not None and not name.endswith(only):
            return float_linear(g, x, weight, bias, name)
        x = fake_activations(g, x, activation_mode, weight.shape[1])
        return float_linear(g, x, fake_weight(weight, weight_mode), bias, name)

    return linear


def embeddings(model, pixels: np.ndarray) -> np.ndarray:
    from smolcli.bench.onnx_profile import session

    return session(model.SerializeToString(), 2).run(None, {"pixel_values": pixels})[0]


def report(label: str, mmproj: Path, image, tiles: int) -> None:
    from smolcli.runtime.vision.image_preprocess import pixel_values
    from smolcli.runtime.vision.onnx_graph import build_model, read_vision_weights

    w = read_vision_weights(mmproj)
    pixels = pixel_values(image, w.longest_edge, w.tile, w.mean, w.std)[-tiles:]
    ref = embeddings(build_model(w), pixels)

    def error(linear) -> float:
        out = embeddings(build_model(w, linear), pixels)
        return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))

    print(f"\n{label}: width {w.width}, {w.layers} layers, {len(pixels)} tiles; relative embedding error")
    print("| everywhere (weights / activations) | error |\n| --- | --- |")
    for name, weights, activations in EVERYWHERE:
        print(f"| {name} | {error(fake_linear(weights, activations)):.4f} |", flush=True)
    rows = {}
    for kind, ending in KINDS.items():
        rows[kind] = [
            error(fake_linear(*modes, only=ending)) for modes in (("channel", "row"), ("channel", None), (None, "row"))
        ]
    total = sum(r[0] ** 2 for r in rows.values())
    print(
        "| only this kind per-row | error | share | weights only | activations only |\n| --- | --- | --- | --- | --- |"
    )
    for kind, (both, weights, activations) in rows.items():
        print(f"| {kind} | {both:.4f} | {both**2 / total:.0%} | {weights:.4f} | {activations:.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=2, help="the last tiles of the photo (256M: about 1 s each)")
    args = parser.parse_args()

    from smolcli.bench.files import prepare_files
    from smolcli.convert import convert_checkpoint
    from smolcli.runtime.vision.images import load_image
    from smolcli.synthetic.random_checkpoint import write_random_checkpoint

    f16, _ = prepare_files("256m", "Q8_0", "F16", report=print)
    image = load_image(f16.image)
    with tempfile.TemporaryDirectory() as folder:
        for seed, (generation, dtype) in enumerate((("SmolVLM", "BF16"), ("SmolVLM2", "F16"))):
            source = write_random_checkpoint(Path(folder) / generation, "tiny", generation, dtype, seed=seed)
            pair = convert_checkpoint(source, Path(folder) / f"{generation}-gguf", "F32", "F32", name=generation)
            report(f"tiny {generation}", pair.mmproj, image, 5)
    report("SmolVLM-256M shapes", f16.mmproj, image, args.tiles)


if __name__ == "__main__":
    main()
