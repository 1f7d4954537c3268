"""Random PEFT-layout adapter folders written with numpy alone: for the fast tests (no torch, no peft) and benchmarks.

The layout is the one PEFT's save_pretrained writes (tests/test_adapters_reference.py makes real ones):
`base_model.model.<module>.lora_A.weight` (rank, in), `.lora_B.weight` (out, rank), DoRA's
`.lora_magnitude_vector` (out,), and modules_to_save as `base_model.model.<module>.weight`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smolcli.convert.checkpoint import open_checkpoint

PREFIX = "base_model.model."


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, array in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little"))
        handle.write(raw)
        for array in tensors.values():
            handle.write(np.ascontiguousarray(array, dtype="<f4").tobytes())


def config_for(targets: list[str], rank: int, alpha: float, **extra) -> dict:
    return {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "lora_dropout": 0.0,
        "task_type": None,
        **extra,
    }


def write_adapter(
    folder: Path,
    base: Path,
    modules: list[str],
    rank: int = 4,
    alpha: float = 8.0,
    dora: bool = False,
    saved: list[str] = (),
    seed: int = 0,
    **config,
) -> Path:
    """LoRA on each listed module (full names, e.g. model.text_model.layers.0.mlp.down_proj) of the base."""
    checkpoint = open_checkpoint(base)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for module in modules:
        out_features, in_features = checkpoint.tensors[module + ".weight"].shape
        tensors[f"{PREFIX}{module}.lora_A.weight"] = rng.standard_normal((rank, in_features), np.float32) * 0.1
        tensors[f"{PREFIX}{module}.lora_B.weight"] = rng.standard_normal((out_features, rank), np.float32) * 0.1
        if dora:
            tensors[f"{PREFIX}{module}.lora_magnitude_vector"] = 1.0 + rng.random(out_features, np.float32)
    for name in saved:
        shape = checkpoint.tensors[name].shape
        tensors[PREFIX + name] = rng.standard_normal(shape, np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "adapter_model.safetensors", tensors)
    leaves = sorted({m.rsplit(".", 1)[-1] for m in modules})
    settings = config_for(leaves, rank, alpha, use_dora=dora, **config)
    if saved:
        settings["modules_to_save"] = sorted({n.removesuffix(".weight").rsplit(".", 1)[-1] for n in saved})
    (folder / "adapter_config.json").write_text(json.dumps(settings))
    return folder
