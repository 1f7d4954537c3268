"""What the CLI prints besides answers: progress and notes go to stderr, never stdout."""

from __future__ import annotations

import typer


def progress(message: str) -> None:
    typer.echo(message, err=True)
