"""`smolcli.serve()`: the app under uvicorn, until SIGTERM or Ctrl-C, which finish the requests in flight."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

import uvicorn

from smolcli.api.model import Model
from smolcli.api.options import LoadOptions
from smolcli.serve.app import create_app
from smolcli.serve.settings import ServeSettings

Report = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM ends it with exit status 0.

    uvicorn re-raises a caught signal once it has shut down, which kills the process with that
    signal; a service manager (systemd, docker stop) reads a graceful SIGTERM stop as a clean exit.
    """

    def __init__(self, config: uvicorn.Config, report: Report):
        super().__init__(config)
        self.report = report

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
    app = create_app(model, settings, options)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http="h11",
        ws="none",
        lifespan="on",
        log_level="warning",
        access_log=False,  # the app writes its own line per request
        timeout_graceful_shutdown=int(settings.limits.timeout_s) + 5,
    )
    server = _Server(config, report)
    worker = app.state.worker

    def load_failed(error: BaseException) -> None:
        report(f"smolcli serve: the model did not load: {error}")
        server.should_exit = True

    worker.on_load_failed = load_failed
    server.run()
    if worker.load_error is not None:
        raise worker.load_error
    report("smolcli serve: stopped")
