"""A PEFT adapter folder (adapter_config.json + adapter_model.safetensors), matched tensor by tensor to its base.

Every adapter tensor must name a module of the base checkpoint with the shapes that module has: an
adapter trained on another base fails here, naming the first tensor that does not fit, before
anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smolcli.convert.adapter_config import AdapterConfig, read_adapter_config
from smolcli.convert.checkpoint import Checkpoint, pickled_files
from smolcli.convert.safetensors_file import TensorEntry, read_header
from smolcli.errors import BadInput

WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
VISION_PREFIXES = ("model.vision_model.", "model.connector.")
LORA_SUFFIXES = {".lora_A.weight": "a", ".lora_B.weight": "b", ".lora_magnitude_vector": "magnitude"}


@dataclass(frozen=True)
class LoraModule:
    """One adapted linear layer: W' = W + scale * B @ A, rescaled row by row by DoRA's magnitude when present."""

    weight: str  # the base tensor's name, e.g. model.text_model.layers.0.self_attn.q_proj.weight
    a: TensorEntry  # (rank, in)
    b: TensorEntry  # (out, rank)
    scale: float  # PEFT's scaling: lora_alpha / r (or / sqrt(r) with rsLoRA), per module
    magnitude: TensorEntry | None = None  # DoRA: (out,)

    @property
    def rank(self) -> int:
        return self.a.shape[0]

    @property
    def module(self) -> str:
        return self.weight.removesuffix(".weight")

    @property
    def vision(self) -> bool:
        return self.weight.startswith(VISION_PREFIXES)


@dataclass(frozen=True)
class Adapter:
    root: Path
    name: str
    config: AdapterConfig
    modules: dict[str, LoraModule]  # base tensor name -> its LoRA
    replaced: dict[str, TensorEntry]  # modules_to_save: base tensor name -> the adapter's whole tensor

    @property
    def is_dora(self) -> bool:
        return any(m.magnitude is not None for m in self.modules.values())

    @property
    def has_vision(self) -> bool:
        return any(m.vision for m in self.modules.values()) or any(n.startswith(VISION_PREFIXES) for n in self.replaced)


def linear_modules(checkpoint: Checkpoint) -> list[str]:
    """The base's linear layers (2-D weights that are not embeddings), by module name: what LoRA can target."""
    return [
        name.removesuffix(".weight")
        for name, entry in checkpoint.tensors.items()
        if len(entry.shape) == 2 and name.endswith(".weight") and "embed" not in name.split(".")[-2]
    ]


def _matches(module: str, target: str) -> bool:
    # PEFT's list matching: the whole name, or its tail at a dot boundary
    return module == target or module.endswith("." + target)


def check_targets(config: AdapterConfig, modules: list[str]) -> None:
    if isinstance(config.target_modules, str):  # a regular expression or "all-linear": the tensors tell
        return
    for target in config.target_modules:
        if not any(_matches(module, target) for module in modules):
            known = sorted({m.rsplit(".", 1)[-1] for m in modules})
            raise BadInput(
                f"{config.path}: target module {target!r} is not a linear layer of this SmolVLM base "
                f"(known: {', '.join(known)})"
            )


def _weights_file(root: Path) -> Path:
    path = root / WEIGHTS_FILE
    if path.is_file():
        return path
    pickles = pickled_files(root)
    if pickles:
        raise BadInput(
            f"{root}: only pickled adapter weights ({', '.join(pickles)}); smolcli never unpickles: "
            "save the adapter with safe_serialization=True (PEFT's default) to get adapter_model.safetensors"
        )
    raise BadInput(f"{root}: no {WEIGHTS_FILE}; give the folder PEFT's save_pretrained wrote")


def _shape_error(adapter_name: str, shape: tuple, base_name: str, base_shape: tuple, root: Path) -> BadInput:
    return BadInput(
        f"{root}: adapter tensor {adapter_name} has shape {list(shape)}, which does not fit the base's "
        f"{base_name} {list(base_shape)}; was this adapter trained on another base model?"
    )


def open_adapter(folder: Path, checkpoint: Checkpoint, name: str | None = None) -> Adapter:
    root = Path(folder)
    if not root.is_dir():
        raise BadInput(f"{root}: no such adapter folder; give the folder holding adapter_config.json")
    config = read_adapter_config(root)
    check_targets(config, linear_modules(checkpoint))
    entries = read_header(_weights_file(root))

    parts: dict[str, dict[str, TensorEntry]] = {}
    replaced: dict[str, TensorEntry] = {}
    for key, entry in entries.items():
        if not key.startswith(PEFT_PREFIX):
            raise BadInput(f"{root}: adapter tensor {key} is not under {PEFT_PREFIX!r}; is this a PEFT adapter?")
        inner = key.removeprefix(PEFT_PREFIX)
        suffix = next((s for s in LORA_SUFFIXES if inner.endswith(s)), None)
        if suffix is not None:
            parts.setdefault(inner.removesuffix(suffix) + ".weight", {})[LORA_SUFFIXES[suffix]] = entry
            continue
        if ".lora_" in inner:
            raise BadInput(f"{root}: adapter tensor {key} is a LoRA kind smolcli does not apply (embedding or bias)")
        base = checkpoint.tensors.get(inner)
        if base is None:
            raise BadInput(f"{root}: adapter tensor {key} replaces {inner}, which this base does not have")
        if base.shape != entry.shape:
            raise _shape_error(key, entry.shape, inner, base.shape, root)
        replaced[inner] = entry  # modules_to_save: the trained copy of the whole module

    modules: dict[str, LoraModule] = {}
    for weight, found in parts.items():
        base = checkpoint.tensors.get(weight)
        if base is None or len(base.shape) != 2:
            raise BadInput(
                f"{root}: the adapter adapts {weight.removesuffix('.weight')}, not a linear layer of this base"
            )
        if "a" not in found or "b" not in found:
            lacking = "lora_A" if "a" not in found else "lora_B"
            raise BadInput(
                f"{root}: {weight.removesuffix('.weight')} has no {lacking} tensor; the adapter is incomplete"
            )
        a, b, magnitude = found["a"], found["b"], found.get("magnitude")
        out_features, in_features = base.shape
        if len(a.shape) != 2 or a.shape[1] != in_features:
            raise _shape_error(PEFT_PREFIX + weight[:-7] + ".lora_A.weight", a.shape, weight, base.shape, root)
        if len(b.shape) != 2 or b.shape != (out_features, a.shape[0]):
            raise _shape_error(PEFT_PREFIX + weight[:-7] + ".lora_B.weight", b.shape, weight, base.shape, root)
        if magnitude is not None and magnitude.shape != (out_features,):
            raise _shape_error(
                PEFT_PREFIX + weight[:-7] + ".lora_magnitude_vector", magnitude.shape, weight, base.shape, root
            )
        module = weight.removesuffix(".weight")
        if a.shape[0] != config.module_rank(module):
            raise BadInput(
                f"{root}: {module} has rank {a.shape[0]} but adapter_config.json says r={config.module_rank(module)}"
            )
        modules[weight] = LoraModule(weight, a, b, config.module_scale(module), magnitude)
    if not modules and not replaced:
        raise BadInput(f"{root}: the adapter holds no tensors")
    return Adapter(root, name or root.resolve().name, config, modules, replaced)
