"""LoRA adapters for `load(..., lora=[...])` and `--lora FILE[:SCALE]`: parsed, checked, and their merged mmproj found.

llama.cpp applies a LoRA GGUF (smolcli convert-adapter) to the language model at run time. mtmd has no
LoRA for the vision encoder, so an adapter that changes it names the merged mmproj written beside it:
that file is used unless the caller gave an mmproj.
"""

from __future__ import annotations

import math
from pathlib import Path

from smolcli.convert.lora_adapter import KEY_MMPROJ
from smolcli.errors import BadInput, ModelFileError
from smolcli.runtime.gguf.gguf_file import read_gguf

LoraSpec = tuple[str, float]


def _scale(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{{lora}} {spec!r}: the scale after ':' must be a number, e.g. adapter.gguf:0.5") from None
    if not math.isfinite(value):
        raise BadInput(f"{{lora}} {spec!r}: the scale must be a finite number")
    return value


def parse_lora(items) -> tuple[LoraSpec, ...]:
    """'a.gguf', 'a.gguf:0.5', Path or (path, scale) -> ((path, scale), ...); the scale defaults to 1."""
    if items is None:
        return ()
    if isinstance(items, (str, Path)):
        items = [items]
    specs = []
    for item in items:
        if isinstance(item, tuple):
            path, scale = item
            specs.append((str(path), _scale(str(scale), str(item))))
            continue
        text = str(item)
        head, sep, tail = text.rpartition(":")
        # 'FILE:SCALE' when what follows the last colon reads as a number and FILE is not itself a file
        if sep and not Path(text).exists() and tail.strip().lstrip("+-").replace(".", "", 1).isdigit():
            specs.append((head, _scale(tail, text)))
        else:
            specs.append((text, 1.0))
    return tuple(specs)


def check_adapters(specs: tuple[LoraSpec, ...]) -> Path | None:
    """Check each file is a LoRA adapter GGUF; the merged mmproj one of them names (at most one may)."""
    merged: list[Path] = []
    for path, _ in specs:
        file = Path(path).expanduser()
        if not file.is_file():
            raise BadInput(f"{{lora}} {path}: no such file; convert a PEFT adapter with `smolcli convert-adapter`")
        summary = read_gguf(file)
        if summary.kind != "adapter" or summary.metadata.get("adapter.type") != "lora":
            raise ModelFileError(
                f"{file}: is not a LoRA adapter GGUF ({summary.kind}); make one with `smolcli convert-adapter`",
                path=file,
            )
        name = summary.metadata.get(KEY_MMPROJ)
        if name:
            beside = file.parent / str(name)
            if not beside.is_file():
                raise ModelFileError(
                    f"{file}: changes the vision encoder, but its merged mmproj {name} is not beside it; "
                    "convert the adapter again, or merge it: smolcli convert BASE --adapter DIR",
                    path=file,
                )
            merged.append(beside)
    if len(merged) > 1:
        raise BadInput(
            "two {lora} adapters change the vision encoder, and mtmd runs one mmproj: "
            "merge them with `smolcli convert --adapter` instead"
        )
    return merged[0] if merged else None
