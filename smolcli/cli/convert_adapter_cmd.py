"""`smolcli convert-adapter`: a PEFT LoRA adapter folder to a llama.cpp LoRA GGUF, for `--lora` at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from smolcli.cli.output import progress


def convert_adapter(
    adapter: Annotated[
        Path, typer.Argument(help="PEFT adapter folder (adapter_config.json + adapter_model.safetensors).")
    ],
    base: Annotated[
        Path,
        typer.Option("--base", help="The base checkpoint folder the adapter was trained on (Hugging Face layout)."),
    ],
    outdir: Annotated[
        Optional[Path], typer.Option("--outdir", "-o", help="Where to write the file(s) (default: current folder).")
    ] = None,
    outtype: Annotated[str, typer.Option("--type", help="Type of the LoRA tensors: F32, F16 or Q8_0.")] = "F16",
    mmproj_type: Annotated[
        str, typer.Option("--mmproj-type", help="Type of the merged mmproj, when the adapter changes the vision side.")
    ] = "F16",
    name: Annotated[
        Optional[str], typer.Option("--name", help="Base name of the outputs (default: the adapter folder's name).")
    ] = None,
) -> None:
    """Convert a PEFT LoRA adapter to NAME-LoRA-TYPE.gguf, applied at run time with --lora FILE[:SCALE].

    Prints the written path(s) on stdout: an adapter that changes the vision encoder or the connector
    also gets mmproj-NAME-TYPE.gguf, the merged vision file (mtmd has no runtime LoRA), used with it.
    DoRA adapters and modules_to_save cannot run as a llama.cpp LoRA: merge those with convert --adapter.

    Examples:

      smolcli convert-adapter ./my-finetune --base ./SmolVLM-256M-Instruct -o adapters/

      smolcli ask -m SmolVLM-256M-Instruct-Q8_0.gguf --lora adapters/my-finetune-LoRA-F16.gguf "Hi"
    """
    from smolcli.convert.lora_adapter import convert_adapter as run

    result = run(adapter, base, outdir, outtype, mmproj_type, name, report=progress)
    typer.echo(str(result.adapter))
    if result.mmproj is not None:
        typer.echo(str(result.mmproj))
