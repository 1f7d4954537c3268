"""`smolcli cache`: see and empty the on-disk store of image embeddings that `ask` and `chat` reuse."""

from __future__ import annotations

import typer

from smolcli.cli.units import size_text
from smolcli.runtime.embedding_cache import MAX_BYTES_ENV, EmbeddingCache

app = typer.Typer(
    name="cache",
    help="The stored image embeddings that let ask and chat skip the vision encoder for a known image.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("info")
def info() -> None:
    """Where the image-embedding cache is, how many entries it holds and their size."""
    cache = EmbeddingCache.default()
    entries, n_bytes = cache.info()
    typer.echo(f"folder: {cache.folder}")
    typer.echo(f"entries: {entries}")
    typer.echo(f"bytes: {n_bytes} ({size_text(n_bytes)})")
    typer.echo(f"limit: {cache.max_bytes} ({size_text(cache.max_bytes)}; set {MAX_BYTES_ENV} to change)")


@app.command("clear")
def clear() -> None:
    """Remove every stored image embedding; the next ask or chat encodes its images again."""
    cache = EmbeddingCache.default()
    removed = cache.clear()
    typer.echo(f"removed {removed} entries from {cache.folder}")
