"""What each supported model family is: architectures, config defaults, tensor names, prompt formats."""

from __future__ import annotations

from types import ModuleType

from smolcli.errors import SmolcliError
from smolcli.models import smolvlm

FAMILIES: tuple[ModuleType, ...] = (smolvlm,)


def supported_architectures() -> list[str]:
    return [arch for family in FAMILIES for arch in family.ARCHITECTURES]


def family_for(architecture: str | None) -> ModuleType:
    for family in FAMILIES:
        if architecture in family.ARCHITECTURES:
            return family
    raise SmolcliError(
        f"unsupported architecture {architecture!r}; smolcli converts {', '.join(supported_architectures())}"
    )
