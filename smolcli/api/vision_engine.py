"""--vision-engine auto|onnx|mtmd: which encoder turns image tiles into embeddings for the language model.

auto: ONNX Runtime when every layer runs on the CPU (n_gpu_layers 0, or a llama.cpp built without a
GPU) and onnxruntime imports, else mtmd; an mmproj that cannot be converted then falls back to mtmd
with one stderr line. onnx: ONNX Runtime or a one-line error. mtmd: llama.cpp's own encoder.

--vision-precision auto|int8|bf16|fp32: what the ONNX encoder computes in (docs/vision-precision.md).
auto: int8, which checks itself against fp32 when it is built and is built in fp32 where it does not hold
(onnx_vision.build). fp32: exact (transformers' arithmetic). bf16: the fp32 graph run by OpenVINO in bfloat16
(ONNX Runtime's CPU provider has no bfloat16 MatMul), an optional extra, only when asked; a one-line error on a
CPU without bfloat16 instructions (avx512_bf16, amx_bf16; Arm bf16) or without OpenVINO installed. An explicit
int8, bf16 or fp32 asks for the ONNX encoder: under auto it is chosen with GPU layers too; with --vision-engine
mtmd (the mmproj's own type) it is an error.
"""

from __future__ import annotations

from smolcli.errors import BadInput, SmolcliError
from smolcli.runtime.vision.onnx_vision import (
    DEFAULT_PRECISION,
    VISION_ENGINES,
    OnnxVisionEncoder,
    onnxruntime_available,
)
from smolcli.runtime.vision.openvino_encoder import PIP_LINE, openvino_available
from smolcli.util.cpu_features import native_bf16


def check_vision_engine(name: str) -> None:
    if name not in VISION_ENGINES:
        raise BadInput(f"{{vision_engine}} {name!r} is not an engine; use {', '.join(VISION_ENGINES)}")


VISION_PRECISIONS = ("auto", "int8", "bf16", "fp32")


def check_vision_precision(precision: str, engine: str = "auto") -> None:
    if precision not in VISION_PRECISIONS:
        raise BadInput(f"{{vision_precision}} {precision!r} is not a precision; use {', '.join(VISION_PRECISIONS)}")
    if engine == "mtmd" and precision != "auto":
        raise BadInput(
            f"{{vision_precision}} {precision} is the ONNX encoder's; mtmd runs the mmproj's own type: "
            "leave {vision_engine} out or use {vision_engine=onnx}"
        )
    if precision == "bf16":
        check_bf16()


def check_bf16() -> None:
    """bf16 runs where the CPU computes it (its flags; where they cannot be read, OpenVINO's compiled precision
    decides, openvino_encoder) and OpenVINO is installed."""
    if native_bf16() is False:
        raise BadInput(
            "{vision_precision} bf16 needs a CPU with bfloat16 instructions (avx512_bf16 or amx_bf16; Arm: bf16), "
            "and this one has none; use {vision_precision=fp32} (exact) or int8"
        )
    if not openvino_available():
        raise BadInput(f"{{vision_precision}} bf16 runs through OpenVINO, which is not installed: {PIP_LINE}")


def vision_encoder_for(
    name: str, n_gpu_layers: int, threads: int | None, precision: str = "auto"
) -> OnnxVisionEncoder | None:
    """The ONNX encoder the engine should use, or None for mtmd."""
    from smolcli.runtime.llama.engine import default_threads

    check_vision_engine(name)
    check_vision_precision(precision, name)
    if name == "mtmd" or (name == "auto" and n_gpu_layers != 0 and precision == "auto"):
        return None
    if not onnxruntime_available():
        if name == "onnx":
            raise SmolcliError("{vision_engine=onnx} needs onnxruntime and onnx: pip install onnxruntime onnx")
        return None
    chosen = DEFAULT_PRECISION if precision == "auto" else precision
    return OnnxVisionEncoder(threads or default_threads(), chosen, fallback_to_mtmd=name == "auto")
