"""Which SmolVLM pairs the `llm` plugin offers, and under which model ids.

Three sources, in this order:
- every registry release by its name (`smolvlm-256m`), its aliases and repo ids: loaded from the
  model store, pulled on first use like `smolcli ask -m NAME`;
- every intact pair in the model store ($SMOLCLI_HOME) as `NAME:SOURCE-QUANT-MMPROJ`
  (`smolvlm-256m:converted-Q8_0-F16`), the store folder's own name, so each stored type is reachable;
- local pairs added with `llm smolvlm add PATH` (kept in llm's user folder, `smolcli-pairs.json`),
  whose model id is the path as added, or the name given with --name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from smolcli.errors import SmolcliError
from smolcli.util.atomic_file import write_atomically

ADDED_FILE = "smolcli-pairs.json"


@dataclass(frozen=True)
class LlmPair:
    model_id: str
    model: str  # what smolcli.load() takes: a registry name, or a GGUF or pair-folder path
    mmproj: str | None = None
    aliases: tuple[str, ...] = ()


def registry_pairs() -> list[LlmPair]:
    from smolcli.models.registry import MODELS

    return [
        LlmPair(entry.name, entry.name, None, tuple(n for n in entry.names() if n != entry.name)) for entry in MODELS
    ]


def stored_pairs() -> list[LlmPair]:
    from smolcli.store.model_store import ModelStore

    store = ModelStore()
    try:
        entries = store.entries()
    except SmolcliError:
        return []  # an unreadable index must not break `llm models`; `smolcli models` says what is wrong
    return [
        LlmPair(
            f"{entry.name}:{entry.source}-{entry.quant}-{entry.mmproj_type}",
            str(store.model_path(entry)),
            str(store.mmproj_path(entry)),
        )
        for entry in entries
        if store.is_intact(entry)
    ]


def added_pairs(user_dir: Path) -> list[LlmPair]:
    path = user_dir / ADDED_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [LlmPair(item["id"], item["model"], item.get("mmproj")) for item in data["pairs"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as error:
        raise SmolcliError(
            f"{path}: unreadable ({type(error).__name__}: {error}); move it aside and add the pairs again"
        ) from None


def add_pair(user_dir: Path, pair: LlmPair) -> None:
    """Remember a local pair (replacing one with the same id); the file is rewritten whole."""
    kept = [p for p in added_pairs(user_dir) if p.model_id != pair.model_id] + [pair]
    _write(user_dir, kept)


def remove_pair(user_dir: Path, model_id: str) -> bool:
    pairs = added_pairs(user_dir)
    kept = [p for p in pairs if p.model_id != model_id]
    if len(kept) == len(pairs):
        return False
    _write(user_dir, kept)
    return True


def _write(user_dir: Path, pairs: list[LlmPair]) -> None:
    data = {"pairs": [{"id": p.model_id, "model": p.model, "mmproj": p.mmproj} for p in pairs]}
    write_atomically(user_dir / ADDED_FILE, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def all_pairs(user_dir: Path) -> list[LlmPair]:
    """Every pair once per model id: an added pair's id wins over a stored or registry one of the same name."""
    found: dict[str, LlmPair] = {}
    for pair in registry_pairs() + stored_pairs() + added_pairs(user_dir):
        found[pair.model_id] = pair
    return list(found.values())
