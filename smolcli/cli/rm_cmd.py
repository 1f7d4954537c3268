"""`smolcli rm`: remove a model's pairs from the local store."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from smolcli.cli.output import progress
from smolcli.errors import SmolcliError
from smolcli.util.units import size_text


def rm(
    name: Annotated[str, typer.Argument(help="A registry name or repo id, as `smolcli models` shows it.")],
    quant: Annotated[
        Optional[str], typer.Option("--quant", "-q", help="Remove only the pair of this language-model type.")
    ] = None,
    mmproj_type: Annotated[
        Optional[str], typer.Option("--mmproj-type", help="Remove only pairs with this mmproj type.")
    ] = None,
) -> None:
    """Remove a model from the local store (every stored pair of it, unless --quant / --mmproj-type narrow it).

    The checkpoint it was converted from stays in the Hugging Face cache (`hf cache rm` removes that).

    Examples:

      smolcli rm smolvlm-256m

      smolcli rm smolvlm2-2.2b --quant Q8_0
    """
    from smolcli.store.model_ref import model_name
    from smolcli.store.model_store import ModelStore

    ref = model_name(name)
    store = ModelStore()
    doomed = store.find(
        ref.repo_id, None, quant.upper() if quant else None, mmproj_type.upper() if mmproj_type else None
    )
    if not doomed:
        narrowed = " with those types" if quant or mmproj_type else ""
        raise SmolcliError(
            f"{ref.name} has no pair{narrowed} in the model store ({store.root}); `smolcli models` shows what it holds"
        )
    store.remove(doomed)
    for entry in doomed:
        progress(
            f"removed {entry.name} ({entry.source} {entry.quant}, mmproj {entry.mmproj_type}, {size_text(entry.size)})"
        )
