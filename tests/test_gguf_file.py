"""Our header-only GGUF reader agrees with gguf-py's full reader and refuses damaged files in one line."""

from __future__ import annotations

import struct

import gguf
import pytest

from smolcli.errors import SmolcliError
from smolcli.runtime.gguf.gguf_file import read_gguf


@pytest.mark.parametrize("part", ["model", "mmproj"])
def test_summary_agrees_with_gguf_py(converted, part):
    path = getattr(converted("Q4_K_M", "Q8_0"), part)
    ours = read_gguf(path)
    reader = gguf.GGUFReader(path)
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if len(field.types) > 1 and field.types[0] == gguf.GGUFValueType.ARRAY:
            assert ours.array_lengths[key] == len(field.data), key
        elif not key.startswith("tokenizer.ggml."):
            assert ours.metadata[key] == pytest.approx(field.contents()), key
    types: dict[str, int] = {}
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    assert ours.tensor_types == types
    assert ours.parameters == sum(int(t.n_elements) for t in reader.tensors)


def test_a_file_cut_inside_the_header(converted, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(converted("F16", "F16").model.read_bytes()[:2000])
    with pytest.raises(SmolcliError, match="damaged or truncated"):
        read_gguf(cut)


def test_an_old_gguf_version(converted, tmp_path):
    data = bytearray(converted("F16", "F16").model.read_bytes())
    data[4:8] = struct.pack("<I", 1)
    old = tmp_path / "old.gguf"
    old.write_bytes(bytes(data))
    with pytest.raises(SmolcliError, match="version 1"):
        read_gguf(old)
