"""Typed errors: each carries the facts of one problem and its fix, and reads as one line.

The library and the CLI name settings differently (`ctx=` against `--ctx`), so a message
names a setting as `{ctx}`, or with a value as `{cache_type=f16}`: `str(error)` spells it as
the library's keyword argument (`ctx=`, `cache_type=f16`), and each front end spells it its
own way through `error.text(spell)` (the CLI: `--ctx`, `--cache-type f16`). Only the names in
SETTINGS are placeholders; any other brace in a message stays as it is.
"""

from __future__ import annotations

import re
from typing import Callable

__all__ = [
    "AnswerTruncated",
    "BadInput",
    "ContextFull",
    "DiskFull",
    "HubError",
    "MemoryPlanRefused",
    "ModelFileError",
    "SmolcliError",
]

# every setting a message may name: the keyword arguments of smolcli.load() and Model.ask()
SETTINGS = (
    "model",
    "mmproj",
    "images",
    "video",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "ignore_eos",
    "logprobs",
    "n_gpu_layers",
    "mmproj_offload",
    "threads",
    "ctx",
    "cache_type",
    "max_memory",
    "embedding_cache",
    "repack_weights",
    "image_size",
    "max_tiles",
    "vision_engine",
    "vision_precision",
    "verbose",
    "offline",
    "quant",
    "mmproj_type",
    "revision",
    "prebuilt",
    "json_schema",
    "grammar",
    "lora",
    "adapter",
    "adapter_scale",
    # smolcli.convert.convert_checkpoint's
    "outdir",
    "name",
    "fps",
    "max_frames",
    # smolcli.api.watch's
    "open_timeout",
    "every",
    "on_change",
    "max_events",
    "until",
    # smolcli.serve's ServeLimits (serve --parallel, --conversations)
    "parallel",
    "conversations",
)
_PLACEHOLDER = re.compile(r"\{(" + "|".join(SETTINGS) + r")(?:=([^{}]*))?\}")

Spelling = Callable[[str, "str | None"], str]


def library_spelling(setting: str, value: str | None) -> str:
    return f"{setting}={value}" if value is not None else f"{setting}="


def spell_settings(text: str, spell: Spelling = library_spelling) -> str:
    """'raise {ctx}' -> 'raise ctx=' (library) or 'raise --ctx' (CLI)."""
    return _PLACEHOLDER.sub(lambda match: spell(match.group(1), match.group(2)), text)


class SmolcliError(Exception):
    """A problem with the user's input or environment; the message names it and the fix."""

    exit_code = 1

    def __init__(self, message: str, **facts):
        super().__init__(message)
        self.message = message
        # what the front ends and tests may read instead of parsing the message
        self.facts = facts
        if {"text", "message", "facts"} & set(facts):
            raise TypeError("an error's facts cannot be named text, message or facts")
        for name, value in facts.items():
            setattr(self, name, value)

    def text(self, spell: Spelling = library_spelling) -> str:
        return spell_settings(self.message, spell)

    def __str__(self) -> str:
        return self.text()


class BadInput(SmolcliError):
    """A prompt, image, setting or value that cannot be used as given."""


class ModelFileError(SmolcliError):
    """A model or mmproj file that is missing, of the wrong kind, damaged, or that llama.cpp would not load."""


class ContextFull(SmolcliError):
    """The prompt, or a turn of a conversation, needs more tokens than the context holds."""


class MemoryPlanRefused(SmolcliError):
    """The run would not fit the memory limit; `plan` holds each part's size."""


class HubError(SmolcliError):
    """The Hugging Face Hub could not give what a pull needs (offline, not found, gated, network)."""


class DiskFull(SmolcliError):
    """No space left where a file was being written; nothing half-written stays."""


class AnswerTruncated(SmolcliError):
    """A structured answer cut before its JSON ended (max_tokens, a full context, a stop string); `partial_text` holds what came."""
