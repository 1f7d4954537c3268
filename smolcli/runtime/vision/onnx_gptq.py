"""GPTQ rounding of the int8 graph's weights (Frantar et al. 2022), calibrated on the self-check's probe tiles.

Rounding each weight to its nearest int8 step leaves an error that is the same for every token of every tile, so it
adds up coherently through the language model's attention over the image tokens: on the tiny test checkpoints it,
not the activations' rounding, decides how far the first answer token moves (docs/vision-precision.md). GPTQ rounds
one input column at a time and moves what that column's rounding left onto the columns not yet rounded, weighted by
H = X^T X of the layer's inputs, so the layer's output error on inputs like X is smallest. X here is the fp32
graph's inputs to each int8 linear layer on onnx_probe's synthetic tiles: no calibration data, the same int8 graph
and kernels (only which int8 values the weights hold changes).

Benchmark form only (onnx_int8 "-gptq"): the inputs come from one in-memory fp32 session of the whole tower (372 MB
of weights on 256M), and every layer's X^T X is held at once (float64: about 1 GB on 256M), past the build's memory
bound that the self-check's layered run keeps.
"""

from __future__ import annotations

import numpy as np

from smolcli.runtime.vision.onnx_graph import Graph, VisionWeights, build_model, float_linear

GPTQ_ENDS = ("attn_q", "attn_k", "attn_v", "ffn_up", "ffn_down")  # the layers the int8 forms quantize
DAMP = 0.01  # of H's mean diagonal, added to its diagonal: GPTQ's own default
BLOCK = 128  # columns rounded before the rest are updated (GPTQ's lazy batches: the same result, in BLAS)


def probe_hessians(weights: VisionWeights, threads: int = 2) -> dict[str, np.ndarray]:
    """{layer name: X^T X (float64, [in, in])} of the fp32 graph's inputs to each GPTQ_ENDS layer on the probe."""
    import onnxruntime as ort

    from smolcli.runtime.vision import onnx_proto
    from smolcli.runtime.vision.onnx_probe import probe_pixels

    inputs: dict[str, str] = {}

    def recording(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        if name.endswith(GPTQ_ENDS):
            inputs[name] = x
        return float_linear(g, x, weight, bias, name)

    model = build_model(weights, recording)
    distinct = sorted(set(inputs.values()))  # q, k and v read the same LayerNorm output
    float32 = onnx_proto.messages().TensorProto.FLOAT
    model.graph.output.extend(onnx_proto.value_info(x, float32, None) for x in distinct)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = session.run(distinct, {"pixel_values": probe_pixels(weights)})
    hessians = {}
    for x, out in zip(distinct, outputs, strict=True):
        rows = out.reshape(-1, out.shape[-1]).astype(np.float64)
        hessians[x] = rows.T @ rows
    return {name: hessians[x] for name, x in inputs.items()}


def gptq_round(weight: np.ndarray, hessian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight [out, in] -> (int8 [in, out], float32 scale [out]) as onnx_int8.quantize_weight gives them (one
    symmetric scale per output channel, from its largest weight), the int8 values chosen by GPTQ with `hessian`.
    Input channels whose weights are all zero (the outlier channels split off to fp32) are left out of it."""
    w = weight.astype(np.float64)
    n, k = w.shape
    absmax = np.abs(w).max(axis=1)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0)
    h = hessian.copy()
    dead = ~np.any(w != 0, axis=0)
    h[dead, :] = 0
    h[:, dead] = 0
    h[dead, dead] = 1
    h[np.diag_indices(k)] += DAMP * max(float(np.mean(np.diag(h))), 1e-12)
    upper = np.linalg.cholesky(np.linalg.inv(h)).T  # H^-1 = U^T U
    q = np.zeros((n, k))
    for start in range(0, k, BLOCK):
        end = min(start + BLOCK, k)
        block, errors, u = w[:, start:end].copy(), np.zeros((n, end - start)), upper[start:end, start:end]
        for j in range(end - start):
            q[:, start + j] = np.clip(np.rint(block[:, j] / scale), -127, 127)
            errors[:, j] = (block[:, j] - q[:, start + j] * scale) / u[j, j]
            block[:, j:] -= np.outer(errors[:, j], u[j, j:])
        w[:, end:] -= errors @ upper[start:end, end:]
    return np.ascontiguousarray(q.astype(np.int8).T), scale.astype(np.float32)
