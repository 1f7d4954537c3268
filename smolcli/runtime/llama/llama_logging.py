"""llama.cpp's own log lines: silent by default, on stderr when the user asks for them.

Silent means no Python at all: llama-cpp-python's log callback is a Python function, and a Ctrl-C
that arrives while llama.cpp is inside a long call (loading, encoding an image, quantizing) is raised
inside that callback, where ctypes prints a traceback and swallows it; the call goes on and the
interrupt is lost. With a C function as the callback, the interrupt waits until the call returns and
is raised there. No C no-op is exported by llama.cpp or ggml, so libc's getpid stands in: it takes no
arguments and has no effects, and on the C calling conventions of x86-64 and arm64 the three arguments
a log callback gets are simply ignored. Where libc cannot be found, the Python callback stays.
"""

from __future__ import annotations

import ctypes
import logging

_silent = None  # kept referenced: llama.cpp holds the pointer


def _silent_callback():
    global _silent
    if _silent is None:
        import llama_cpp

        try:
            libc = ctypes.CDLL(None)
            _silent = ctypes.cast(libc.getpid, llama_cpp.llama_log_callback)
        except (OSError, AttributeError, TypeError):
            return None
    return _silent


def configure(verbose: bool) -> None:
    """Route llama.cpp, ggml and mtmd logs to stderr (verbose), or to nothing that runs Python (quiet)."""
    import llama_cpp
    from llama_cpp import _logger, mtmd_cpp

    # Errors too: smolcli reports failures itself, in one line.
    _logger.logger.setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)
    callback = (None if verbose else _silent_callback()) or _logger.llama_log_callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_log_set(callback, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_helper_log_set(callback, ctypes.c_void_p(0))
