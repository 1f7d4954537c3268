"""SIGTERM handled like Ctrl-C: the exception unwinds the stack, so every stage is removed on the way out.

systemd, `docker stop` and `timeout` send SIGTERM, and without a handler Python dies at once, leaving
hidden stages behind. Terminated is not a KeyboardInterrupt: code that lets Ctrl-C stop one answer and
carry on (chat) must not carry on after SIGTERM. It exits 143 (128 + 15), the status a shell reports for a
process SIGTERM killed, so a supervisor reads the run as terminated, not as failed or interrupted.
"""

from __future__ import annotations

import signal
import threading

EXIT_CODE = 128 + signal.SIGTERM


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM."""

    exit_code = EXIT_CODE


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def handle_sigterm() -> None:
    """Install the handler (main thread only, as Python requires)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
