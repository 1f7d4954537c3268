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

__version__ = "0.1.0"  # before the imports below: modules under them read it

from smolcli import api, errors  # noqa: E402
from smolcli.api import *  # noqa: E402, F403 - the library's names are smolcli's
from smolcli.errors import *  # noqa: E402, F403 - and so are its errors

__all__ = [*api.__all__, *errors.__all__, "__version__"]
