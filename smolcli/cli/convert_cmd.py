"""`smolcli convert`: a Hugging Face SmolVLM checkpoint folder to a GGUF model + mmproj pair."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from smolcli.cli.output import progress


def convert(
    source: Annotated[
        Path, typer.Argument(help="Checkpoint folder in Hugging Face layout (config.json, *.safetensors, tokenizer).")
    ],
    outdir: Annotated[
        Optional[Path], typer.Option("--outdir", "-o", help="Where to write the two files (default: current folder).")
    ] = None,
    quant: Annotated[
        str,
        typer.Option(
            "--quant", "-q", help="Language-model type: F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_0, Q4_K_M, Q4_0, ..."
        ),
    ] = "Q4_K_M",
    mmproj_type: Annotated[str, typer.Option("--mmproj-type", help="Vision-encoder type: F32, F16 or Q8_0.")] = "F16",
    name: Annotated[
        Optional[str], typer.Option("--name", help="Base name of the outputs (default: the source folder's name).")
    ] = None,
    threads: Annotated[
        Optional[int], typer.Option("--threads", "-t", help="Threads for quantizing (default: all cores).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show llama.cpp's log on stderr.")] = False,
    adapter: Annotated[
        Optional[Path],
        typer.Option(
            "--adapter",
            help="A PEFT LoRA/DoRA adapter folder (adapter_config.json + adapter_model.safetensors) to merge in first, in float32; the outputs are named after it.",
        ),
    ] = None,
    adapter_scale: Annotated[
        float, typer.Option("--adapter-scale", help="Multiply the adapter's change by this (1: as trained).")
    ] = 1.0,
) -> None:
    """Convert a SmolVLM / SmolVLM2 checkpoint to NAME-QUANT.gguf and mmproj-NAME-TYPE.gguf.

    Prints the two paths on stdout, one per line; progress goes to stderr.

    Examples:

      smolcli convert ./SmolVLM-256M-Instruct

      smolcli convert ./SmolVLM-Instruct --quant Q8_0 --mmproj-type Q8_0 -o models/

      smolcli convert ./SmolVLM-256M-Instruct --adapter ./my-finetune
    """
    from smolcli.convert import convert_checkpoint
    from smolcli.runtime.llama import llama_logging

    llama_logging.configure(verbose)
    result = convert_checkpoint(
        source,
        outdir,
        quant,
        mmproj_type,
        name,
        report=progress,
        threads=threads,
        adapter=adapter,
        adapter_scale=adapter_scale,
        verbose=verbose,
    )
    typer.echo(str(result.model))
    typer.echo(str(result.mmproj))
