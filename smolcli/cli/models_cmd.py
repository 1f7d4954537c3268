"""`smolcli models`: the registry of SmolVLM releases, and which of them the local store holds."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from smolcli.util.units import count_text, size_text


def _local(store, entry) -> dict:
    return {
        "source": entry.source,
        "quant": entry.quant,
        "mmproj_type": entry.mmproj_type,
        "size": entry.size,
        "intact": store.is_intact(entry),
        "source_repo": entry.source_repo,
        "revision": entry.revision,
        "commit": entry.commit,
        "added": entry.added,
        "model": {"path": str(store.model_path(entry)), "size": entry.model.size, "sha256": entry.model.sha256},
        "mmproj": {"path": str(store.mmproj_path(entry)), "size": entry.mmproj.size, "sha256": entry.mmproj.sha256},
    }


def listing() -> dict:
    """Every registry entry and every stored model, with what the store holds of each."""
    from smolcli.models.registry import MODELS
    from smolcli.store.model_store import ModelStore
    from smolcli.util.user_cache import cache_dir

    store = ModelStore()
    stored = store.entries()
    rows = []
    for model in MODELS:
        held = [e for e in stored if e.repo_id.lower() == model.repo_id.lower()]
        prebuilt = model.prebuilt
        rows.append(
            {
                "name": model.name,
                "repo_id": model.repo_id,
                "aliases": list(model.aliases),
                "family": model.family,
                "release": model.release,
                "variant": model.variant,
                "parameters": model.parameters,
                "tile_size": model.tile_size,
                "tokens_per_tile": model.tokens_per_tile,
                "default_quant": model.default_quant,
                "default_mmproj_type": model.default_mmproj_type,
                "prebuilt": {"repo_id": prebuilt.repo_id, "models": prebuilt.models, "mmprojs": prebuilt.mmprojs}
                if prebuilt
                else None,
                "local": [_local(store, e) for e in held],
            }
        )
    known = {model.repo_id.lower() for model in MODELS}
    for repo_id in dict.fromkeys(e.repo_id for e in stored if e.repo_id.lower() not in known):
        held = [e for e in stored if e.repo_id == repo_id]
        rows.append(
            {
                "name": held[0].name,
                "repo_id": repo_id,
                "aliases": [],
                "family": held[0].family,
                "release": None,
                "variant": None,
                "parameters": None,
                "tile_size": None,
                "tokens_per_tile": None,
                "default_quant": None,
                "default_mmproj_type": None,
                "prebuilt": None,
                "local": [_local(store, e) for e in held],
            }
        )
    return {"home": str(cache_dir()), "store": str(store.root), "models": rows}


def _local_text(local: list[dict]) -> str:
    if not local:
        return "-"
    parts = []
    for pair in local:
        label = f"{pair['quant']}/{pair['mmproj_type']}{' prebuilt' if pair['source'] == 'prebuilt' else ''}"
        parts.append(f"{label} {size_text(pair['size'])}" + ("" if pair["intact"] else " (files missing: pull again)"))
    return ", ".join(parts)


def table_lines(report: dict) -> list[str]:
    header = ("NAME", "REPO", "PARAMS", "TILE", "DEFAULT", "LOCAL")
    rows = [header]
    for row in report["models"]:
        rows.append(
            (
                row["name"],
                row["repo_id"],
                count_text(row["parameters"]) if row["parameters"] else "?",
                f"{row['tile_size']}px/{row['tokens_per_tile']}tok" if row["tile_size"] else "?",
                f"{row['default_quant']}/{row['default_mmproj_type']}" if row["default_quant"] else "-",
                _local_text(row["local"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]
    total = sum(pair["size"] for row in report["models"] for pair in row["local"])
    lines.append(f"store: {report['store']} ({size_text(total)})")
    return [line.rstrip() for line in lines]


def models(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: the registry, the store, checksums.")
    ] = False,
) -> None:
    """List the SmolVLM models smolcli knows by name, and which ones are in the local store.

    TILE is the image tile size and the tokens one tile costs; DEFAULT is the language-model
    and mmproj type a pull makes; LOCAL is what the store holds, with sizes on disk.

    Examples:

      smolcli models

      smolcli models --json
    """
    report = listing()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo("\n".join(table_lines(report)))
