"""`smolcli cache`: see and empty the on-disk stores that `ask` and `chat` reuse: image embeddings, image prompts'
prefix states, mmproj copies and ONNX vision encoders."""

from __future__ import annotations

import typer

from smolcli.runtime.llama.prefix_cache import MAX_BYTES_ENV as PREFIX_MAX_BYTES_ENV
from smolcli.runtime.llama.prefix_cache import PrefixCache
from smolcli.runtime.vision.embedding_cache import MAX_BYTES_ENV, EmbeddingCache
from smolcli.runtime.vision.mmproj_variant import KEPT, clear_variants, variant_files, variants_folder
from smolcli.runtime.vision.onnx_vision import built_bytes, built_forms, clear_built, onnx_folder
from smolcli.util.units import size_text

app = typer.Typer(
    name="cache",
    help="The stored image embeddings that let ask and chat skip the vision encoder for a known image, the prefix states that let ask skip an image prompt's prefill, the mmproj copies that --image-size and --max-tiles use, and the ONNX vision encoders built from mmprojs.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("info")
def info() -> None:
    """Where the image-embedding cache is, how many entries it holds and their size."""
    cache, prefixes = EmbeddingCache.default(), PrefixCache.default()  # a bad size bound refused before any line
    entries, n_bytes = cache.info()
    typer.echo(f"folder: {cache.folder}")
    typer.echo(f"entries: {entries}")
    typer.echo(f"bytes: {n_bytes} ({size_text(n_bytes)})")
    typer.echo(f"limit: {cache.max_bytes} ({size_text(cache.max_bytes)}; set {MAX_BYTES_ENV} to change)")
    states, state_bytes = prefixes.info()
    typer.echo(
        f"prefix states: {states} in {prefixes.folder}, {state_bytes} bytes ({size_text(state_bytes)}; "
        f"limit {size_text(prefixes.max_bytes)}, set {PREFIX_MAX_BYTES_ENV} to change)"
    )
    copies = variant_files()
    copy_bytes = sum(path.stat().st_size for path in copies)
    typer.echo(
        f"mmproj copies for other image sizes: {len(copies)} in {variants_folder()}, "
        f"{copy_bytes} bytes ({size_text(copy_bytes)}; the {KEPT} used last are kept)"
    )
    onnx_bytes = built_bytes()
    typer.echo(
        f"ONNX vision encoders: {len(built_forms())} in {onnx_folder()}, {onnx_bytes} bytes ({size_text(onnx_bytes)})"
    )


@app.command("clear")
def clear() -> None:
    """Remove every stored image embedding, prefix state, mmproj copy and ONNX vision encoder; the next ask or chat rebuilds what it needs."""
    cache, prefixes = EmbeddingCache.default(), PrefixCache.default()
    removed = cache.clear()
    typer.echo(f"removed {removed} entries from {cache.folder}")
    typer.echo(f"removed {prefixes.clear()} prefix states from {prefixes.folder}")
    copies, freed = clear_variants()
    typer.echo(f"removed {copies} mmproj copies ({size_text(freed)}) from {variants_folder()}")
    forms, freed = clear_built()
    typer.echo(f"removed {forms} ONNX vision encoders ({size_text(freed)}) from {onnx_folder()}")
