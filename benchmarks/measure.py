"""Run one measured step in a fresh Python interpreter and read back the figures it prints.

Shared by the benchmark scripts: a fresh process per step, so each peak RSS belongs to that step
alone. The snippet gets `peak_rss()` defined and prints its figures as one JSON object on its last
stdout line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"

# ru_maxrss survives fork and exec on Linux (a child would report its parent's peak); VmHWM belongs to this process
# A step's own children count too: llama.cpp's quantizer runs in one (smolcli.convert.quantize_worker).
PEAK_RSS = r"""
def peak_rss():
    import resource
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            own = int(line.split()[1]) * 1024
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""

# transformers imports the installed torchvision (the test extra's, for video), whose CPU-less wheel imports only once
# two op schemas exist: the tests' shim defines them. A snippet that imports transformers starts with this line.
TORCHVISION_SHIM = (
    f"import sys; sys.path.insert(0, {str(TESTS)!r}); import torchvision_shim; torchvision_shim.install()\n"
)


def install_torchvision_shim() -> None:
    """The same, in this process (a benchmark that imports transformers itself)."""
    sys.path.insert(0, str(TESTS))
    import torchvision_shim

    torchvision_shim.install()


def run_fresh(script: str, args: list[str], env: dict | None = None, python: str = sys.executable) -> dict:
    """Run `script` (with peak_rss() defined) as `python -c`; return its figures plus the parent's view.

    `python` is this interpreter unless another environment's is given (a peer's own venv).

    Added keys: "wall_s", the wall time of the whole process (interpreter start to exit) as seen from
    here, and "output", whatever the step printed on stdout before its figures line.
    """
    started = time.perf_counter()
    done = subprocess.run([str(python), "-c", PEAK_RSS + script, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"step {args} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    figures["wall_s"] = wall
    figures["output"] = "\n".join(lines[:-1])
    return figures
