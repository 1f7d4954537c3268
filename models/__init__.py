"""What each supported model family is: architectures, config defaults, tensor names, prompt formats."""

from __future__ import annotations

from smolcli.errors import SmolcliError
from smolcli.models.family import ModelFamily
from smolcli.models.smolvlm import SMOLVLM

FAMILIES: tuple[ModelFamily, ...] = (SMOLVLM,)


def supported_architectures() -> list[str]:
    return [arch for family in FAMILIES for arch in family.architectures]


def family_for(architecture: str | None) -> ModelFamily:
    for family in FAMILIES:
        if architecture in family.architectures:
            return family
    raise SmolcliError(
        f"unsupported architecture {architecture!r}; smolcli converts {', '.join(supported_architectures())}"
    )
