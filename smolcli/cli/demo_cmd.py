"""`smolcli demo`: the whole job offline, with a tiny random model built on the spot."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from smolcli.cli.output import progress


def demo(
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="Most tokens to generate.")] = 24,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build the demo files again even if a complete set is cached.")
    ] = False,
    threads: Annotated[
        Optional[int], typer.Option("--threads", "-t", min=1, help="CPU threads (default: all cores).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show llama.cpp's log on stderr.")] = False,
) -> None:
    """Build a tiny random SmolVLM, convert it to GGUF and ask it about a drawn picture: no download needed.

    The files are built once into $SMOLCLI_HOME/demo (default: the user cache folder,
    ~/.cache/smolcli on Linux) and reused. stdout gets only the answer, which is noise:
    the weights are random. Everything else goes to stderr.

    Examples:

      smolcli demo

      SMOLCLI_HOME=/tmp/smolcli smolcli demo --rebuild
    """
    from smolcli.runtime.llama import llama_logging
    from smolcli.synthetic.demo import run_demo

    llama_logging.configure(verbose)
    result = run_demo(report=progress, max_tokens=max_tokens, threads=threads, verbose=verbose, rebuild=rebuild)
    files = result.files
    if result.reused:
        progress(f"reusing the demo files in {files.folder}")
    progress(f"question: {result.question} (about {files.image.name})")
    answer = result.answer.strip()
    typer.echo(answer or "(no text: the random model ended its answer at once)")
    progress(
        f"note: that answer is noise: the model has random weights ({result.n_tokens} tokens, greedy). "
        "It shows that conversion, the vision encoder and generation all run on this machine."
    )
    progress(f"model:   {files.model}")
    progress(f"mmproj:  {files.mmproj}")
    progress(f"picture: {files.image}")
    progress(f"checkpoint (Hugging Face layout): {files.checkpoint}")
    progress("for real answers, convert a released checkpoint: smolcli convert ./SmolVLM-256M-Instruct")
