"""`smolcli pull`: download a model by name or repo id, convert it once, keep it in the local store."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from smolcli.cli.output import progress


def pull(
    name: Annotated[
        str,
        typer.Argument(
            help="A registry name (smolcli models lists them) or a Hub repo id, e.g. HuggingFaceTB/SmolVLM-256M-Instruct."
        ),
    ],
    quant: Annotated[
        Optional[str],
        typer.Option(
            "--quant", "-q", help="Language-model type (default: the registry's for this model, else Q4_K_M)."
        ),
    ] = None,
    mmproj_type: Annotated[
        Optional[str],
        typer.Option(
            "--mmproj-type", help="Vision-encoder type: F32, F16 or Q8_0 (default: the registry's, else F16)."
        ),
    ] = None,
    prebuilt: Annotated[
        bool,
        typer.Option("--prebuilt", help="Take the publisher's ready GGUF pair (ggml-org) instead of converting here."),
    ] = False,
    revision: Annotated[str, typer.Option("--revision", help="Branch, tag or commit of the Hub repo.")] = "main",
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Pull again even when the store has this pair (takes the revision's latest commit)."
        ),
    ] = False,
    threads: Annotated[
        Optional[int], typer.Option("--threads", "-t", help="Threads for quantizing (default: all cores).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show llama.cpp's log on stderr.")] = False,
) -> None:
    """Download a SmolVLM model from the Hugging Face Hub and store it as a GGUF pair, once.

    Prints the model and mmproj paths on stdout; progress goes to stderr. Later runs of
    ask, chat and info find it by name, without the network.

    Examples:

      smolcli pull smolvlm-256m

      smolcli pull HuggingFaceTB/SmolVLM2-2.2B-Instruct --quant Q8_0

      smolcli pull smolvlm-500m --prebuilt
    """
    from smolcli.runtime.llama import llama_logging
    from smolcli.store.model_ref import model_name
    from smolcli.store.model_store import ModelStore
    from smolcli.store.pull import PullOptions
    from smolcli.store.pull import pull as pull_model

    llama_logging.configure(verbose)
    store = ModelStore()
    options = PullOptions(quant, mmproj_type, prebuilt, revision, force, threads)
    entry = pull_model(model_name(name), options, progress, store)
    typer.echo(str(store.model_path(entry)))
    typer.echo(str(store.mmproj_path(entry)))
