"""--vision-precision bf16: the fp32 ONNX graph of the vision encoder run by OpenVINO's CPU plugin in bfloat16.

ONNX Runtime's CPU provider has no bfloat16 MatMul or Gemm (onnxruntime 1.32: NOT_IMPLEMENTED), so a bf16 graph
cannot run there. OpenVINO reads our fp32 ONNX file (the one --vision-precision fp32 builds, its weights file
beside it) directly and, asked for INFERENCE_PRECISION_HINT bf16, computes its MatMuls in bfloat16 on CPUs with
AVX-512 BF16 or AMX (Arm: the bf16 extension), keeping the fp32 weights on disk. It is an optional extra
(`pip install 'smolcli[bf16]'`), imported only here and only when bf16 is asked for: the default path never
loads it.

A plugin that cannot compute bf16 silently falls back to f32; the compiled model's precision is read back and
anything but bf16 is refused, so `vision_precision` "bf16" in --json is what ran.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from smolcli.errors import ModelFileError, SmolcliError

PIP_LINE = "pip install 'smolcli[bf16]'"


def openvino_available() -> bool:
    """OpenVINO is installed (found, not imported: importing it takes a while and its plugins load lazily)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except ValueError:  # a module set to None in sys.modules: its import is blocked
        return False


def openvino_version() -> str | None:
    if not openvino_available():
        return None
    import openvino

    return openvino.__version__.split("-")[0]


class OpenVinoSession:
    """A compiled OpenVINO model with the one call the encoder makes of an ONNX Runtime session:
    run(None, {"pixel_values": x}) -> [embeddings]."""

    def __init__(self, compiled) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()

    def run(self, output_names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        del output_names  # the encoder's graph has one output
        (pixels,) = feeds.values()
        result = self._request.infer({0: np.ascontiguousarray(pixels, dtype=np.float32)})
        # the request's output buffer is reused by the next run: copied out
        return [np.array(result[0], dtype=np.float32, copy=True)]


def openvino_session(source: Path | bytes, threads: int) -> OpenVinoSession:
    """Our fp32 ONNX graph (a file with its weights beside it, or bytes built in memory) compiled for bf16."""
    try:
        import openvino as ov
    except ImportError as missing:
        raise SmolcliError(
            f"{{vision_precision=bf16}} runs through OpenVINO, which could not be imported ({missing}): {PIP_LINE}"
        ) from None
    core = ov.Core()
    config = {
        "INFERENCE_PRECISION_HINT": "bf16",
        "INFERENCE_NUM_THREADS": threads,
        # one tile per request, one request at a time: latency, one stream
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    try:
        model = core.read_model(source if isinstance(source, bytes) else str(source))
        compiled = core.compile_model(model, "CPU", config)
    except RuntimeError as error:  # OpenVINO's own errors: a graph its ONNX reader or CPU plugin refuses
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"OpenVINO could not compile the vision encoder ({first})") from None
    ran = compiled.get_property("INFERENCE_PRECISION_HINT")
    if ran != ov.Type.bf16:
        raise SmolcliError(
            f"{{vision_precision}} bf16: OpenVINO's CPU plugin would compute in {ran.get_type_name()} on this CPU "
            "(no bfloat16 instructions it uses); use {vision_precision=fp32} (exact) or int8"
        )
    return OpenVinoSession(compiled)
