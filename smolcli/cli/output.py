"""What the CLI prints besides answers: progress and notes go to stderr, never stdout."""

from __future__ import annotations

import typer


def progress(message: str) -> None:
    typer.echo(message, err=True)


# the library's setting names, as the command line spells them where they differ from --name-with-dashes
FLAGS = {"model": "-m", "images": "-i", "mmproj_offload": "--no-mmproj-offload", "embedding_cache": "--no-cache"}


def cli_spelling(setting: str, value: str | None) -> str:
    """How an error names a setting on the command line: {ctx} -> --ctx, {cache_type=f16} -> --cache-type f16."""
    flag = FLAGS.get(setting, "--" + setting.replace("_", "-"))
    return f"{flag} {value}" if value not in (None, "True") else flag
