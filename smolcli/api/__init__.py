"""The library: load a SmolVLM pair by name or path and ask it about images.

Layers, each importing only those below it: front ends (smolcli.cli, later batch, serve,
plugins) -> this facade -> the model store and Hub (smolcli.store) and the runtime
(smolcli.runtime) -> the converter and the model families (smolcli.convert, smolcli.models)
-> small utilities (smolcli.util).
"""

from smolcli.api.answer import Answer, AnswerStream, Timings, TokenLogprob, TopLogprob, Usage
from smolcli.api.chat import Chat
from smolcli.api.model import Model, load
from smolcli.api.options import LoadOptions

__all__ = [
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
]
