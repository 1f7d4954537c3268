"""Quantize a float language-model GGUF with llama.cpp's own quantizer (through llama-cpp-python)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf

from smolcli.errors import SmolcliError
from smolcli.util.threads import usable_cores

FileType = gguf.LlamaFileType

# Types llama.cpp quantizes to without an importance matrix, by the names its tools use.
QUANT_TYPES: dict[str, FileType] = {
    "F32": FileType.ALL_F32,
    "F16": FileType.MOSTLY_F16,
    "BF16": FileType.MOSTLY_BF16,
    "Q8_0": FileType.MOSTLY_Q8_0,
    "Q6_K": FileType.MOSTLY_Q6_K,
    "Q5_K_M": FileType.MOSTLY_Q5_K_M,
    "Q5_K_S": FileType.MOSTLY_Q5_K_S,
    "Q5_1": FileType.MOSTLY_Q5_1,
    "Q5_0": FileType.MOSTLY_Q5_0,
    "Q4_K_M": FileType.MOSTLY_Q4_K_M,
    "Q4_K_S": FileType.MOSTLY_Q4_K_S,
    "Q4_1": FileType.MOSTLY_Q4_1,
    "Q4_0": FileType.MOSTLY_Q4_0,
    "IQ4_NL": FileType.MOSTLY_IQ4_NL,
    "IQ4_XS": FileType.MOSTLY_IQ4_XS,
    "Q3_K_L": FileType.MOSTLY_Q3_K_L,
    "Q3_K_M": FileType.MOSTLY_Q3_K_M,
    "Q3_K_S": FileType.MOSTLY_Q3_K_S,
    "Q2_K": FileType.MOSTLY_Q2_K,
}
DEFAULT_QUANT = "Q4_K_M"

# K-quants and IQ4_XS pack rows in super-blocks of 256; narrower rows fall back to a legacy type.
SUPER_BLOCK = 256
SUPER_BLOCK_TYPES = {name for name in QUANT_TYPES if "_K" in name or name == "IQ4_XS"}


def parse_quant(name: str, choices: dict[str, object], what: str) -> str:
    key = name.strip().upper()
    if key not in choices:
        raise SmolcliError(f"unknown {what} {name!r}; choose one of {', '.join(choices)}")
    return key


WORKER = Path(__file__).with_name("quantize_worker.py")
POLL_SECONDS = 0.1  # how often the parent looks at the quantizer: Ctrl-C stops it within this


def quantize(source: Path, target: Path, quant: str, threads: int | None = None, verbose: bool = False) -> None:
    """llama.cpp's quantizer, in a child process (see quantize_worker) that Ctrl-C and SIGTERM stop at once.

    Its log (and ggml's crash handler, which writes to stdout) goes to stderr with `verbose`, else to a
    file beside `target` that is read for the cause of a failure.
    """
    log_path = target.with_name(f"{target.name}.log")
    command = [
        sys.executable,
        str(WORKER),  # the file itself, not -m: it needs llama_cpp only, not smolcli's imports
        str(source),
        str(target),
        str(int(QUANT_TYPES[quant])),
        str(threads or usable_cores()),
        str(os.getpid()),
    ]
    with open(log_path, "wb") as log:
        output = sys.stderr.fileno() if verbose else log.fileno()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
        try:
            while True:
                try:
                    status = child.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            if child.poll() is None:  # interrupted, terminated, or any error here: the child goes too
                child.kill()
                child.wait()
    log_text = log_path.read_text(errors="replace")
    log_path.unlink(missing_ok=True)
    if status == 0:
        return
    if _disk_full(source, target, log_text):
        # as a writer's own full-disk error, so the caller names its output folder (convert_checkpoint does)
        raise OSError(errno.ENOSPC, "No space left on device (llama.cpp's quantizer)", str(target))
    what = f"crashed (signal {-status})" if status < 0 else f"failed (status {status})"
    raise SmolcliError(f"llama.cpp's quantizer {what} on {quant}; rerun with {{verbose}} for its log")


def _disk_full(source: Path, target: Path, log_text: str) -> bool:
    # llama.cpp reports a failed write as a C++ exception in its log; the free space tells the rest
    if "No space left" in log_text or "ENOSPC" in log_text:
        return True
    return shutil.disk_usage(target.parent).free < source.stat().st_size


def tensor_types(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (GGML type name, ggml shape) for each tensor of a GGUF file."""
    reader = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape)) for t in reader.tensors}


def fallbacks(types: dict[str, tuple[str, tuple[int, ...]]], quant: str) -> dict[str, str]:
    """Tensors a super-block type could not take (row width not a multiple of 256), with the type they got."""
    if quant not in SUPER_BLOCK_TYPES:
        return {}
    return {name: qtype for name, (qtype, shape) in types.items() if len(shape) >= 2 and shape[0] % SUPER_BLOCK != 0}
