"""`python quantize_worker.py SOURCE TARGET FTYPE THREADS PARENT_PID`: llama.cpp's quantizer in a process of its own.

llama_model_quantize runs for minutes on the 2.2B model inside one C call, and llama-cpp-python's log
callback swallows a KeyboardInterrupt raised there (ctypes prints a traceback and goes on). Run in a
child, the parent stays in Python, polls, and on Ctrl-C or SIGTERM kills the child at once. The child
ignores SIGINT (the terminal sends it to the whole process group; the parent decides) and dies with its
parent, so a killed `smolcli convert` leaves no quantizer writing into a stage nobody owns.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent still kills the child on its way out
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def main(argv: list[str]) -> int:
    source, target, ftype, nthread, parent = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(int(parent))
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = int(nthread)
    return int(llama_cpp.llama_model_quantize(source.encode(), target.encode(), params))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
