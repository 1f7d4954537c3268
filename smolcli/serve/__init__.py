"""`smolcli serve`: the model as an HTTP service: OpenAI's API (/v1), ollama's (/api) and a chat page at /.

>>> from smolcli.serve import ServeSettings, create_app, serve
>>> serve("smolvlm-256m", ServeSettings(port=8080))      # blocks until SIGTERM  # doctest: +SKIP
>>> app = create_app("smolvlm-256m")                     # an ASGI app, to embed  # doctest: +SKIP

Requests queue for the one model (a worker thread owns it); a conversation whose messages extend
one the server has kept goes on from its KV cache, evaluating only the new message.
"""

from smolcli.serve.app import create_app
from smolcli.serve.server import serve
from smolcli.serve.settings import ServeLimits, ServeSettings

__all__ = ["ServeLimits", "ServeSettings", "create_app", "serve"]
