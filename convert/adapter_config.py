"""A PEFT adapter's adapter_config.json, read and checked: what the merge and the GGUF writer may rely on.

PEFT writes every field of its LoraConfig, most of them at a neutral value. A field we know and that
changes nothing about the weights is ignored; a field that would change the arithmetic must be at its
neutral value, or the adapter is refused with the field named. A field we do not know is ignored when it
is empty (None, false, {}, []): PEFT adds such fields release after release. With a value, it is refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from smolcli.convert.checkpoint import read_json
from smolcli.errors import BadInput

CONFIG_FILE = "adapter_config.json"
REQUIRED = ("peft_type", "r", "lora_alpha", "target_modules")
# fields that say nothing about the weights we apply (training settings, bookkeeping)
IGNORED = {
    "alpha_pattern",  # read below
    "rank_pattern",  # read below
    "use_rslora",  # read below
    "use_dora",  # read below
    "modules_to_save",  # read below
    "auto_mapping",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "init_lora_weights",
    "lora_dropout",
    "task_type",
    "peft_version",
    "layers_pattern",
    "layers_to_transform",  # narrows which layers got adapters: the tensors say which did
    "exclude_modules",  # likewise
    "megatron_core",
    "qalora_group_size",  # only with use_qalora
    "loftq_config",  # LoftQ changes the initialization, not how a trained adapter applies
    "eva_config",
    "corda_config",
    "ensure_weight_tying",
}
# fields that change how the adapter applies: only their neutral value is accepted
NEUTRAL = {
    "bias": "none",
    "fan_in_fan_out": False,
    "lora_bias": False,
    "use_qalora": False,
    "layer_replication": None,
    "target_parameters": None,
    "trainable_token_indices": None,
    "alora_invocation_tokens": None,
    "megatron_config": None,
    "use_bdlora": None,
}


def _empty(value: object) -> bool:
    return value is None or value is False or value == {} or value == [] or value == ""


@dataclass(frozen=True)
class AdapterConfig:
    path: Path
    rank: int
    alpha: float
    target_modules: tuple[str, ...] | str  # a list of module names, or PEFT's regular expression
    use_rslora: bool
    use_dora: bool
    modules_to_save: tuple[str, ...]
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]
    base_model: str | None

    def _pattern_value(self, pattern: dict, module: str, default):
        # PEFT's get_pattern_key: a key matches a module name that ends with it, at a dot boundary
        for key, value in pattern.items():
            if re.match(rf"(.*\.)?{key}$", module):
                return value
        return default

    def module_rank(self, module: str) -> int:
        return int(self._pattern_value(self.rank_pattern, module, self.rank))

    def module_scale(self, module: str) -> float:
        """PEFT's scaling for one module: lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA."""
        rank = self.module_rank(module)
        alpha = float(self._pattern_value(self.alpha_pattern, module, self.alpha))
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


def read_adapter_config(folder: Path) -> AdapterConfig:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise BadInput(f"{folder}: no {CONFIG_FILE}; give the folder PEFT's save_pretrained wrote")
    raw = read_json(path, "the adapter configuration")
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise BadInput(f"{path}: missing field {missing[0]!r}; is this a PEFT LoRA adapter_config.json?")
    if raw["peft_type"] != "LORA":
        raise BadInput(f"{path}: peft_type {raw['peft_type']!r} is not supported; smolcli applies LORA adapters")
    for key, neutral in NEUTRAL.items():
        value = raw.get(key, neutral)
        if value != neutral and not (neutral is None and _empty(value)):
            raise BadInput(
                f"{path}: {key}={value!r} is not supported (only {neutral!r}); merge such an adapter in PEFT"
            )
    for key, value in raw.items():
        if key not in IGNORED and key not in NEUTRAL and key not in REQUIRED and not _empty(value):
            raise BadInput(
                f"{path}: unknown field {key!r} ({value!r}); smolcli does not know how it changes the weights"
            )

    rank, alpha = raw["r"], raw["lora_alpha"]
    if not isinstance(rank, int) or rank < 1:
        raise BadInput(f"{path}: r={rank!r} must be a positive integer")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise BadInput(f"{path}: lora_alpha={alpha!r} must be a number")
    targets = raw["target_modules"]
    if isinstance(targets, str):
        targets_value: tuple[str, ...] | str = targets
    elif isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets):
        targets_value = tuple(targets)
    else:
        raise BadInput(f"{path}: target_modules must be a list of module names or a regular expression")
    saved = raw.get("modules_to_save") or []
    if not isinstance(saved, list):
        raise BadInput(f"{path}: modules_to_save must be a list of module names")
    return AdapterConfig(
        path=path,
        rank=rank,
        alpha=float(alpha),
        target_modules=targets_value,
        use_rslora=bool(raw.get("use_rslora", False)),
        use_dora=bool(raw.get("use_dora", False)),
        modules_to_save=tuple(saved),
        rank_pattern=dict(raw.get("rank_pattern") or {}),
        alpha_pattern=dict(raw.get("alpha_pattern") or {}),
        base_model=raw.get("base_model_name_or_path"),
    )
