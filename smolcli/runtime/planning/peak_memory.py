"""This process's peak resident memory."""

from __future__ import annotations

import resource
import sys


def peak_rss_bytes() -> int:
    # Linux keeps ru_maxrss across fork and exec, so a process started by a big parent would
    # report the parent's peak; VmHWM belongs to this process's own memory map.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere
