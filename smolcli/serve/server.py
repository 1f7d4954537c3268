"""`smolcli.serve()`: the app under uvicorn, until SIGTERM or Ctrl-C, which finish the requests in flight."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Callable

import uvicorn

from smolcli.api.model import Model
from smolcli.api.options import LoadOptions
from smolcli.errors import BadInput
from smolcli.serve.app import create_app
from smolcli.serve.http_protocol import protocol_with_header_deadline
from smolcli.serve.settings import ServeSettings

Report = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# bigger than any request's headers a client sends, far below what a slow client could make the server hold
MAX_HEADER_BYTES = 64 * 1024


def uvicorn_config(app, settings: ServeSettings, **overrides) -> uvicorn.Config:
    """uvicorn's settings for the app: every wait a client can cause bounded (see ServeLimits)."""
    limits = settings.limits
    options = dict(
        host=settings.host,
        port=settings.port,
        http=protocol_with_header_deadline(limits.header_timeout_s),
        ws="none",
        lifespan="on",
        log_level="warning",
        access_log=False,  # the app writes its own line per request
        timeout_keep_alive=limits.idle_timeout_s,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=limits.max_connections,
        # answers being generated finish; stalled bodies are given up at once (the app's stopping event)
        timeout_graceful_shutdown=int(limits.timeout_s) + 5,
    )
    return uvicorn.Config(app, **(options | overrides))


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that a port in use or a host that is not ours is one line."""
    # as uvicorn chooses: IPv6 for an address with a colon, else IPv4 ("localhost" is 127.0.0.1, not ::1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, family, socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError):
        raise BadInput(f"--host {host}: not an address or name this machine can listen on") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise BadInput(f"port {port} is in use on {host}: choose another --port (0 picks a free one)") from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise BadInput(f"--host {host}: not an address of this machine") from None
        if error.errno == errno.EACCES:
            raise BadInput(f"port {port} needs privileges on {host}: choose a port above 1023") from None
        raise BadInput(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.set_inheritable(True)
    return sock


class Server(uvicorn.Server):
    """uvicorn's server; a SIGTERM ends it with exit status 0, and stopping gives up unfinished request bodies.

    uvicorn re-raises a caught signal once it has shut down, which kills the process with that
    signal; a service manager (systemd, docker stop) reads a graceful SIGTERM stop as a clean exit.
    uvicorn closes idle connections when it stops but waits for every request it has begun, one
    whose body is still arriving (or stalled) included: the app's `stopping` event ends those.
    """

    def __init__(self, config: uvicorn.Config, report: Report = lambda message: None):
        super().__init__(config)
        self.report = report

    async def shutdown(self, sockets=None) -> None:
        stopping: asyncio.Event | None = getattr(getattr(self.config.app, "state", None), "stopping", None)
        if stopping is not None:
            stopping.set()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.report(f"smolcli serve: listening on http://{host}:{port} (OpenAI API at /v1, ollama API at /api)")


def serve(
    model: str | Path | Model,
    settings: ServeSettings | None = None,
    options: LoadOptions | None = None,
    report: Report = _stderr,
) -> None:
    """Serve `model` over OpenAI's chat-completions API until SIGTERM or Ctrl-C (the calling thread blocks).

    The model loads in the server's worker thread; GET /health answers 200 once it has. A model
    that fails to load stops the server, and its error is raised here.

    >>> from smolcli.serve import ServeSettings, serve
    >>> serve("smolvlm-256m", ServeSettings(port=8080))     # doctest: +SKIP
    """
    settings = settings or ServeSettings()
    sock = listening_socket(settings.host, settings.port)
    app = create_app(model, settings, options)
    server = Server(uvicorn_config(app, settings), report)
    worker = app.state.worker

    def load_failed(error: BaseException) -> None:
        report(f"smolcli serve: the model did not load: {error}")
        server.should_exit = True

    worker.on_load_failed = load_failed
    with sock:
        server.run(sockets=[sock])
    if worker.load_error is not None:
        raise worker.load_error
    report("smolcli serve: stopped")
