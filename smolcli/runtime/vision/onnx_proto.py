"""ONNX's protobuf messages without the onnx package: what a first run's build and self-check write and read.

`import onnx` loads its C++ extension, whose operator schemas take about 12 MB of resident memory that nothing
frees; the build only needs the message classes, which live in onnx's generated onnx_ml_pb2 (2 MB). That file
is loaded here on its own, without running onnx/__init__, so a first run holds what a later run holds. Where
onnx is imported already (tests, the "dynamic" int8 kind), its own module is used: the classes are the same.

The helpers build the messages exactly as onnx.helper and onnx.numpy_helper do for the values the vision
graph uses (tests/test_onnx_proto.py holds them byte for byte against onnx's).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np


@functools.cache
def messages():
    """onnx's generated protobuf module (ModelProto, TensorProto, ...), loaded without the onnx package."""
    if "onnx" in sys.modules:
        return sys.modules["onnx"].onnx_ml_pb2
    package = importlib.util.find_spec("onnx")
    if package is None or package.origin is None:
        raise ImportError("No module named 'onnx'")
    spec = importlib.util.spec_from_file_location("smolcli_onnx_ml_pb2", Path(package.origin).parent / "onnx_ml_pb2.py")
    if spec is None or spec.loader is None:
        raise ImportError("onnx has no onnx_ml_pb2 module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its descriptors go to protobuf's default pool, as onnx's own import puts them
    return module


def element_type(dtype: np.dtype) -> int:
    """The TensorProto data type of a numpy dtype (the ones the graphs hold)."""
    kinds = {
        "float32": "FLOAT",
        "float16": "FLOAT16",
        "float64": "DOUBLE",
        "int8": "INT8",
        "uint8": "UINT8",
        "int32": "INT32",
        "int64": "INT64",
        "bool": "BOOL",
    }
    name = np.dtype(dtype).name
    if name not in kinds:
        raise TypeError(f"no ONNX tensor type for numpy {name}")
    return getattr(messages().TensorProto, kinds[name])


def tensor(array: np.ndarray, name: str = ""):
    """A TensorProto holding the array's bytes (onnx.numpy_helper.from_array)."""
    out = messages().TensorProto()
    out.dims.extend(array.shape)
    if name:
        out.name = name
    out.data_type = element_type(array.dtype)
    out.raw_data = np.asarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return out


def attribute(key: str, value):
    """An AttributeProto: int, float, string, tensor, or a list of ints or of floats (onnx.helper.make_attribute)."""
    kinds = messages().AttributeProto
    attr = kinds(name=key)
    if isinstance(value, Integral):
        attr.i, attr.type = int(value), kinds.INT
    elif isinstance(value, Real):
        attr.f, attr.type = float(value), kinds.FLOAT
    elif isinstance(value, (str, bytes)):
        attr.s, attr.type = value.encode() if isinstance(value, str) else value, kinds.STRING
    elif isinstance(value, messages().TensorProto):  # a Constant's value
        attr.t.CopyFrom(value)
        attr.type = kinds.TENSOR
    elif isinstance(value, Iterable) and (values := list(value)):
        if all(isinstance(v, Integral) for v in values):
            attr.ints.extend(values)
            attr.type = kinds.INTS
        elif all(isinstance(v, Real) for v in values):
            attr.floats.extend(values)
            attr.type = kinds.FLOATS
        else:
            raise TypeError(f"attribute {key}: a list of {sorted({type(v).__name__ for v in values})}")
    else:
        raise TypeError(
            f"attribute {key}: {type(value).__name__} {value!r} is not an int, float, string, tensor or list"
        )
    return attr


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "", domain=None, **attrs):
    """A NodeProto, its attributes sorted by name (onnx.helper.make_node)."""
    out = messages().NodeProto(op_type=op_type, input=inputs, output=outputs)
    if name:
        out.name = name
    if domain is not None:
        out.domain = domain
    out.attribute.extend(attribute(key, value) for key, value in sorted(attrs.items()) if value is not None)
    return out


def value_info(name: str, elem_type: int, shape: Sequence[str | int | None] | None):
    """A tensor's ValueInfoProto; shape None: unknown rank (onnx.helper.make_tensor_value_info)."""
    out = messages().ValueInfoProto(name=name)
    tensor_type = out.type.tensor_type
    tensor_type.elem_type = elem_type
    if shape is not None:
        tensor_type.shape.SetInParent()  # an empty shape (a scalar) is still a shape
        for size in shape:
            dim = tensor_type.shape.dim.add()
            if isinstance(size, Integral):
                dim.dim_value = int(size)
            elif isinstance(size, str):
                dim.dim_param = size
    return out


def graph(nodes, name: str, inputs, outputs, initializers=()):
    """A GraphProto (onnx.helper.make_graph)."""
    out = messages().GraphProto(name=name)
    out.node.extend(nodes)
    out.input.extend(inputs)
    out.output.extend(outputs)
    out.initializer.extend(initializers)
    return out


def opset(domain: str, version: int):
    return messages().OperatorSetIdProto(domain=domain, version=version)


def model(graph_proto, opsets, ir_version: int, producer_name: str = "smolcli"):
    """A ModelProto of this graph (onnx.helper.make_model, the IR version given rather than onnx's newest)."""
    out = messages().ModelProto(ir_version=ir_version, producer_name=producer_name)
    out.graph.CopyFrom(graph_proto)
    out.opset_import.extend(opsets)
    return out


def save(model_proto, path: Path) -> None:
    """The model's protobuf as it is (its large tensors already in their external file: onnx.save without
    moving any data)."""
    Path(path).write_bytes(model_proto.SerializeToString())


def load(path: Path):
    """A model's protobuf, its external tensors left where they are (onnx.load(..., load_external_data=False))."""
    return messages().ModelProto.FromString(Path(path).read_bytes())
