"""smolcli: run SmolVLM vision-language models offline through llama.cpp.

>>> import smolcli
>>> model = smolcli.load("smolvlm-256m")                # doctest: +SKIP
>>> answer = model.ask("What is in this image?", images=["photo.jpg"], max_tokens=64)  # doctest: +SKIP
>>> print(answer.text, answer.usage, answer.timings)    # doctest: +SKIP
>>> for piece in model.ask("Describe it.", images=[pil_image], stream=True):          # doctest: +SKIP
...     print(piece, end="")
>>> chat = model.chat(system="Be brief.")               # doctest: +SKIP
>>> chat.send("Hi", images=["a.jpg"]); chat.send("And the colors?")                    # doctest: +SKIP

Models are a registry name (`smolcli models`), a Hub repo id, a language-model GGUF with its
mmproj beside it, or a folder holding a converted pair. Errors are SmolcliError subclasses
(BadInput, ModelFileError, ContextFull, MemoryPlanRefused, HubError, DiskFull), each one line
that names the problem and its fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smolcli.errors import BadInput, ContextFull, DiskFull, HubError, MemoryPlanRefused, ModelFileError, SmolcliError

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "AnswerStream",
    "BadInput",
    "Chat",
    "ContextFull",
    "DiskFull",
    "HubError",
    "LoadOptions",
    "MemoryPlanRefused",
    "Model",
    "ModelFileError",
    "SmolcliError",
    "Timings",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "__version__",
    "load",
]

_LIBRARY = {
    "Answer",
    "AnswerStream",
    "Chat",
    "LoadOptions",
    "Model",
    "Timings",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "load",
}

if TYPE_CHECKING:
    from smolcli.api import (
        Answer,
        AnswerStream,
        Chat,
        LoadOptions,
        Model,
        Timings,
        TokenLogprob,
        TopLogprob,
        Usage,
        load,
    )


def __getattr__(name: str):
    # the library loads on first use, so that `smolcli --help` and the converter do not import the runtime
    if name in _LIBRARY:
        import smolcli.api

        return getattr(smolcli.api, name)
    raise AttributeError(f"module 'smolcli' has no attribute {name!r}")
