"""Where the ONNX vision encoder's time goes, and how close its int8 matmuls come to the machine's int8 peak.

`time_by_op` runs a built encoder with ONNX Runtime's profiler and sums the kernel time of the
last run by op type; `encoder_macs` counts the multiply-adds per tile from the graph (int8 in
MatMulInteger[ToFloat] / MatMulNBits, float in MatMul, Conv and attention); `int8_peak` measures a large square u8 x s8
MatMulInteger through ORT on the same threads (the practical peak), and `vnni_peak` gives the
theoretical one from the clock.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from smolcli.runtime.vision.onnx_attention_int8 import PRODUCT

INT8_OPS = ("MatMulInteger", "MatMulIntegerToFloat", "MatMulNBits")
INT8_ATTENTION = "MatMulIntegerToFloat (attention)"  # onnx_attention_int8's products, apart from the linear layers'
PEAK_SIZE = 2048  # M = K = N of the peak's MatMulInteger: large enough that packing is a small share
PEAK_SECONDS = 1.5
# one 512-bit VPDPBUSD (64 u8 x s8 multiply-adds) per cycle per core: AMD Zen 4's rate, and one port's on
# Intel's AVX-512 VNNI cores (some Xeons have two)
VNNI_MACS_PER_CYCLE = 64


def session(model: bytes | str, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def time_by_op(model: bytes | str, pixels: np.ndarray, threads: int) -> tuple[dict[str, float], float]:
    """({op type: kernel seconds}, the run's wall seconds) of one run after a warm-up run."""
    with tempfile.TemporaryDirectory() as folder:
        profiled = session(model, threads, str(Path(folder) / "profile"))
        profiled.run(None, {"pixel_values": pixels})  # warm-up: buffers allocated, weights packed
        profiled.run(None, {"pixel_values": pixels})
        events = json.loads(Path(profiled.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last = runs[-1]
    start, end = last["ts"], last["ts"] + last["dur"]
    by_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and start <= event["ts"] <= end:
            by_op[_op_label(event["args"]["op_name"], event["name"])] += event["dur"] / 1e6
    return dict(by_op), last["dur"] / 1e6


def _op_label(op_type: str, node_name: str) -> str:
    return INT8_ATTENTION if op_type == "MatMulIntegerToFloat" and PRODUCT in node_name else op_type


def encoder_macs(model, grid_tokens: int, tokens: int, width: int, layers: int) -> dict[str, int]:
    """Multiply-adds per tile by kind: "int8" (MatMulInteger[ToFloat], MatMulNBits), "float" (MatMul, Conv,
    attention), and by the op type that runs them (op_macs).

    Linear layers read their [K, N] (or MatMulNBits' K and N) from the graph; the connector's rows are
    the tile's tokens, every other layer's the patches. Attention's two products per layer are
    patches^2 x width each: in MultiHeadAttention or as MatMuls (float), or as MatMulIntegerToFloat on two
    computed inputs (onnx_attention_int8: int8).
    """
    counts = {"int8": 0, "float": 0}
    for op, macs in op_macs(model, grid_tokens, tokens, width, layers).items():
        counts["int8" if op in (*INT8_OPS, INT8_ATTENTION) else "float"] += macs
    return counts


def op_macs(model, grid_tokens: int, tokens: int, width: int, layers: int) -> dict[str, int]:
    """Multiply-adds per tile by the op type that runs them (encoder_macs' count, split by op type)."""
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    counts: dict[str, int] = defaultdict(int)
    int8_layers = set()  # layer prefixes of onnx_attention_int8's products
    for node in model.graph.node:
        rows = tokens if node.name.startswith("mm.") else grid_tokens
        if node.op_type in ("MatMulInteger", "MatMulIntegerToFloat") and node.input[1] not in shapes:
            int8_layers.add(node.name.split(PRODUCT)[0])  # both operands computed: one of attention's products
        elif node.op_type in ("MatMulInteger", "MatMulIntegerToFloat"):
            k, n = shapes[node.input[1]]
            counts[node.op_type] += rows * k * n
        elif node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            counts[node.op_type] += rows * attrs["K"] * attrs["N"]
        elif node.op_type == "MatMul" and node.input[1] in shapes:
            k, n = shapes[node.input[1]]
            counts[node.op_type] += rows * k * n
        elif node.op_type == "Conv":
            counts[node.op_type] += grid_tokens * int(np.prod(shapes[node.input[1]]))
    per_layer = 2 * grid_tokens * grid_tokens * width  # Q K^T and weights x V
    fused = sum(node.op_type == "MultiHeadAttention" for node in model.graph.node)
    for op, count in ((INT8_ATTENTION, len(int8_layers)), ("MultiHeadAttention", fused)):
        if count:
            counts[op] += count * per_layer
    if layers > len(int8_layers) + fused:  # as MatMul / Softmax / MatMul
        counts["MatMul"] += (layers - len(int8_layers) - fused) * per_layer
    return dict(counts)


def _square_model(op: str):
    from onnx import TensorProto, helper, numpy_helper

    n = PEAK_SIZE
    rng = np.random.default_rng(0)
    if op == "MatMulInteger":
        weight = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "w")
        zero = numpy_helper.from_array(np.array(128, np.uint8), "zp")
        node = helper.make_node("MatMulInteger", ["a", "w", "zp"], ["y"])
        inputs, output, inits = TensorProto.UINT8, TensorProto.INT32, [weight, zero]
    else:
        weight = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "w")
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        inputs, output, inits = TensorProto.FLOAT, TensorProto.FLOAT, [weight]
    graph = helper.make_graph(
        [node],
        "peak",
        [helper.make_tensor_value_info("a", inputs, [n, n])],
        [helper.make_tensor_value_info("y", output, [n, n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model.SerializeToString()


def matmul_peak(threads: int, op: str = "MatMulInteger") -> float:
    """Best GMAC/s of a PEAK_SIZE-cubed MatMulInteger (u8 x s8) or float32 MatMul through ORT."""
    square = session(_square_model(op), threads)
    n = PEAK_SIZE
    rng = np.random.default_rng(1)
    a = (
        rng.integers(0, 256, (n, n), dtype=np.uint8)
        if op == "MatMulInteger"
        else rng.standard_normal((n, n), dtype=np.float32)
    )
    square.run(None, {"a": a})
    best, started = float("inf"), time.perf_counter()
    while time.perf_counter() - started < PEAK_SECONDS:
        begun = time.perf_counter()
        square.run(None, {"a": a})
        best = min(best, time.perf_counter() - begun)
    return n**3 / best / 1e9


def cpu_ghz() -> float | None:
    """The clock from lscpu's max MHz, else the kernel's BogoMIPS / 2 (x86: twice the TSC clock)."""
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}
    if fields.get("CPU max MHz"):
        return float(fields["CPU max MHz"]) / 1000
    if fields.get("BogoMIPS"):
        return float(fields["BogoMIPS"]) / 2000
    return None


def vnni_peak(threads: int) -> float | None:
    """Theoretical int8 GMAC/s on `threads` cores with AVX-512 VNNI (None without it or without a clock)."""
    ghz = cpu_ghz()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if ghz is None or "avx512_vnni" not in flags:
        return None
    return min(threads, os.cpu_count() or threads) * ghz * VNNI_MACS_PER_CYCLE
