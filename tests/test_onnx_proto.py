"""onnx_proto: ONNX's messages built without importing the onnx package (a first run then holds what a later run
holds), written byte for byte as onnx.helper and onnx.numpy_helper write them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from smolcli.runtime.vision import onnx_proto

ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    np.array([0, -1, 5], dtype=np.int64),
    np.array(3, dtype=np.int64),  # a scalar: no dims
    np.array([[-127, 0, 127]], dtype=np.int8),
    np.array([128], dtype=np.uint8),
    np.array([1.5, -2.25], dtype=np.float16),
    np.array([7, 8], dtype=np.int32),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
@pytest.mark.parametrize("name", ["w", ""])
def test_a_tensor_is_numpy_helpers(array, name):
    assert (
        onnx_proto.tensor(array, name).SerializeToString() == numpy_helper.from_array(array, name).SerializeToString()
    )
    assert numpy_helper.to_array(onnx_proto.tensor(array, name)).tobytes() == array.tobytes()


ATTRIBUTES = {
    "axis": -1,
    "epsilon": np.float32(1e-6),
    "scale": 0.125,
    "approximate": "tanh",
    "perm": [0, 2, 1, 3],
    "kernel_shape": (16, 16),
    "floats": [0.5, 2.0],
    "keepdims": True,
    "to": TensorProto.FLOAT,
    "value": numpy_helper.from_array(np.array([128], np.uint8)),
}


@pytest.mark.parametrize("domain", [None, "com.microsoft"])
def test_a_node_and_its_attributes_are_onnx_helpers(domain):
    ours = onnx_proto.node("Op", ["a", "", "b"], ["y"], name="op_1", domain=domain, skipped=None, **ATTRIBUTES)
    theirs = helper.make_node("Op", ["a", "", "b"], ["y"], name="op_1", domain=domain, skipped=None, **ATTRIBUTES)
    assert ours.SerializeToString() == theirs.SerializeToString()
    assert onnx_proto.node("Gelu", ["x"], ["y"]) == helper.make_node("Gelu", ["x"], ["y"])


@pytest.mark.parametrize("value", [[], ["a", 1], object()], ids=["empty", "mixed", "object"])
def test_an_attribute_it_cannot_type_is_refused(value):
    with pytest.raises(TypeError, match="attribute x"):
        onnx_proto.attribute("x", value)


@pytest.mark.parametrize("shape", [None, [], ["tiles", 3, 512, 512], [None, 4]])
def test_value_info_graph_and_model_are_onnx_helpers(shape):
    ours = onnx_proto.value_info("x", TensorProto.FLOAT, shape)
    theirs = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    assert ours.SerializeToString() == theirs.SerializeToString()

    nodes = [helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    initializers = [numpy_helper.from_array(np.ones(4, np.float32), "c")]
    output = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    graph = onnx_proto.graph(nodes, "g", [ours], output, initializers)
    assert (
        graph.SerializeToString() == helper.make_graph(nodes, "g", [theirs], output, initializers).SerializeToString()
    )

    opsets = [onnx_proto.opset("", 21), onnx_proto.opset("com.microsoft", 1)]
    assert opsets == [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="smolcli")
    model.ir_version = 10
    assert onnx_proto.model(graph, opsets, 10).SerializeToString() == model.SerializeToString()


def test_save_and_load_round_trip_what_onnx_reads(tmp_path):
    graph = onnx_proto.graph(
        [onnx_proto.node("Identity", ["x"], ["y"], name="id")],
        "g",
        [onnx_proto.value_info("x", TensorProto.FLOAT, [2])],
        [onnx_proto.value_info("y", TensorProto.FLOAT, [2])],
    )
    model = onnx_proto.model(graph, [onnx_proto.opset("", 21)], 10)
    onnx_proto.save(model, tmp_path / "m.onnx")
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
    assert onnx_proto.load(tmp_path / "m.onnx") == model == onnx.load(str(tmp_path / "m.onnx"))


BUILD_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from smolcli.runtime.vision.onnx_vision import build
built = build(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
print(json.dumps({"path": str(built.source), "cosine": built.probe_cosine, "onnx": "onnx" in sys.modules}))
"""


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_a_first_run_builds_and_self_checks_without_importing_onnx(tiny_pair, tmp_path, precision):
    """The build (and the int8 self-check's layered fp32 reference) in a process of its own: onnx never imported,
    and what it wrote passes onnx's own checker (its weights in their external file)."""
    done = subprocess.run(
        [sys.executable, "-c", BUILD_IN_A_FRESH_PROCESS, str(tiny_pair[1]), precision, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["onnx"] is False
    assert (report["cosine"] is not None) == (precision == "int8")
    onnx.checker.check_model(report["path"])
    model = onnx.load(report["path"], load_external_data=False)
    assert model.ir_version == 10 and model.producer_name == "smolcli"
    assert any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
