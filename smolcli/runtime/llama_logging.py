"""llama.cpp's own log lines: silent by default, on stderr when the user asks for them."""

from __future__ import annotations

import ctypes
import logging


def configure(verbose: bool) -> None:
    """Route llama.cpp, ggml and mtmd logs through llama-cpp-python's logger, at the chosen level."""
    from llama_cpp import _logger, mtmd_cpp

    # Errors too: smolcli reports failures itself, in one line.
    _logger.logger.setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)
    mtmd_cpp.mtmd_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_helper_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
