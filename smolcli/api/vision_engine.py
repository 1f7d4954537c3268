"""--vision-engine auto|onnx|mtmd: which encoder turns image tiles into embeddings for the language model.

auto: ONNX Runtime when every layer runs on the CPU (n_gpu_layers 0, or a llama.cpp built without a
GPU) and onnxruntime imports, else mtmd; an mmproj that cannot be converted then falls back to mtmd
with one stderr line. onnx: ONNX Runtime or a one-line error. mtmd: llama.cpp's own encoder.
"""

from __future__ import annotations

from smolcli.errors import BadInput, SmolcliError
from smolcli.runtime.vision.onnx_vision import VISION_ENGINES, OnnxVisionEncoder, onnxruntime_available


def check_vision_engine(name: str) -> None:
    if name not in VISION_ENGINES:
        raise BadInput(f"{{vision_engine}} {name!r} is not an engine; use {', '.join(VISION_ENGINES)}")


def vision_encoder_for(name: str, n_gpu_layers: int, threads: int | None) -> OnnxVisionEncoder | None:
    """The ONNX encoder the engine should use, or None for mtmd."""
    from smolcli.runtime.llama.engine import default_threads

    check_vision_engine(name)
    if name == "mtmd" or (name == "auto" and n_gpu_layers != 0):
        return None
    if not onnxruntime_available():
        if name == "onnx":
            raise SmolcliError("{vision_engine=onnx} needs onnxruntime and onnx: pip install onnxruntime onnx")
        return None
    return OnnxVisionEncoder(threads or default_threads(), fallback_to_mtmd=name == "auto")
