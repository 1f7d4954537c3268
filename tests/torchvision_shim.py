"""Makes torchvision 0.28's CPU-less wheel importable beside CPU torch 2.13.0 (transformers' video processor needs it).

Its fake-op registrations name `torchvision::nms` and `torchvision::qnms`, which its CUDA extension
would define. A finder on sys.meta_path defines those two schemas just before the first torchvision
import, wherever it comes from (transformers imports torchvision whenever it is installed), so
torch is imported only by what imports torchvision: the fast lane stays torch-free.
"""

from __future__ import annotations

import importlib.abc
import sys

SCHEMAS = (  # torchvision/csrc/ops/nms.cpp and quantized/cpu/qnms_kernel.cpp
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = []  # the schemas live as long as their Library object


def define_schemas() -> None:
    if _library:
        return
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    for schema in SCHEMAS:
        lib.define(schema)
    _library.append(lib)


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            define_schemas()
        return None  # the normal finders do the import


def install() -> None:
    if not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
