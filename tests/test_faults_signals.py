"""Ctrl-C, SIGTERM and SIGKILL sent to a real `smolcli convert` in the middle of llama.cpp's quantizer,
and a pair's two renames failing half-way."""

from __future__ import annotations

import copy
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults import SMOLCLI, hidden_leftovers

from smolcli.convert import STAGE_PREFIX, convert_checkpoint
from smolcli.errors import SmolcliError
from smolcli.models.smolvlm_shapes import SHAPES
from smolcli.synthetic.random_checkpoint import write_random_checkpoint

from cli_checks import default_sigint

STOP_WITHIN_S = 2.0


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory) -> Path:
    """A random checkpoint whose text model takes llama.cpp several seconds to quantize to Q4_K_M on 2 cores."""
    shape = copy.deepcopy(SHAPES["tiny"])
    shape["text"].update(
        hidden_size=1024, intermediate_size=2816, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=4
    )
    return write_random_checkpoint(tmp_path_factory.mktemp("slow") / "slow-ckpt", shape, "SmolVLM", "BF16", seed=2)


def _quantizers_for(outdir: Path) -> list[int]:
    """Pids of quantize workers writing into `outdir` (none may outlive their convert)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "quantize_worker" in command and str(outdir) in command:
                found.append(int(entry.name))
    return found


def _convert_until_quantizing(checkpoint: Path, outdir: Path) -> subprocess.Popen:
    """A real convert in its own process group (as a shell runs it), returned once llama.cpp is quantizing."""
    child = subprocess.Popen(
        [*SMOLCLI, "convert", str(checkpoint), "-o", str(outdir), "-q", "Q4_K_M"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    seen = []
    for line in child.stderr:
        seen.append(line)
        if "quantizing to" in line:
            break
    deadline = time.monotonic() + 10
    while not _quantizers_for(outdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _quantizers_for(outdir), "".join(seen)
    time.sleep(0.5)  # well inside llama_model_quantize
    assert child.poll() is None, "the quantizer finished before the signal: make the test model larger"
    return child


def _stopped(child: subprocess.Popen, send) -> tuple[int, float, str, str]:
    started = time.monotonic()
    send()
    out, err = child.communicate(timeout=30)
    return child.returncode, time.monotonic() - started, out, err


@pytest.mark.parametrize(
    "signal_name, code, word",
    [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")],
)
def test_a_signal_mid_quantize_stops_the_conversion_at_once(slow_checkpoint, tmp_path, signal_name, code, word):
    outdir = tmp_path / "out"
    child = _convert_until_quantizing(slow_checkpoint, outdir)
    number = getattr(signal, signal_name)
    # Ctrl-C reaches the terminal's whole process group; SIGTERM (docker stop, timeout) the process alone
    send = (lambda: os.killpg(child.pid, number)) if number == signal.SIGINT else (lambda: child.send_signal(number))
    returncode, seconds, out, err = _stopped(child, send)
    assert returncode == code, err
    assert seconds < STOP_WITHIN_S, seconds
    assert err.strip().splitlines()[-1] == word and "Traceback" not in err, err
    assert out == ""
    assert list(outdir.iterdir()) == [], "the stage or a half-written file was left"
    time.sleep(0.2)
    assert _quantizers_for(outdir) == []


def test_a_killed_conversion_leaves_no_quantizer_and_the_next_one_clears_its_stage(
    slow_checkpoint, tmp_path, numpy_checkpoint
):
    outdir = tmp_path / "out"
    child = _convert_until_quantizing(slow_checkpoint, outdir)
    child.kill()  # SIGKILL: no handler runs, the stage stays
    child.communicate()
    deadline = time.monotonic() + STOP_WITHIN_S
    while _quantizers_for(outdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _quantizers_for(outdir) == [], "the quantizer outlived its parent"
    (stage,) = [p.name for p in outdir.iterdir()]
    assert stage.startswith(STAGE_PREFIX)
    result = convert_checkpoint(numpy_checkpoint(), outdir, "F16", "F16", name="next")
    assert sorted(p.name for p in outdir.iterdir()) == sorted([result.model.name, result.mmproj.name])


def _digests(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_when_the_second_rename_fails_the_old_pair_stays_whole(numpy_checkpoint, tmp_path, monkeypatch):
    outdir = tmp_path / "out"
    old = convert_checkpoint(numpy_checkpoint(), outdir, "F16", "F16", name="pair")
    before = _digests(old.model, old.mmproj)
    real_replace = os.replace
    calls = []

    def failing_second_output(source, target, *args, **kwargs):
        if Path(target).parent == outdir and Path(target).suffix == ".gguf":
            calls.append(target)
            if len(calls) == 2:
                raise OSError(5, "Input/output error", str(target))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_second_output)
    # another checkpoint, so that a new half would differ from the old one
    other = numpy_checkpoint("SmolVLM2", "F16")
    with pytest.raises(SmolcliError, match="input/output error"):
        convert_checkpoint(other, outdir, "F16", "F16", name="pair")
    monkeypatch.undo()
    assert [Path(c).name for c in calls[:2]] == [old.mmproj.name, old.model.name]  # the second one failed
    assert _digests(old.model, old.mmproj) == before, "half of a new pair replaced half of the old one"
    assert sorted(p.name for p in outdir.iterdir()) == sorted([old.model.name, old.mmproj.name])
    assert hidden_leftovers(outdir) == []


IN_PROCESS_QUANTIZE = r"""
import signal, sys
import llama_cpp
from smolcli.runtime.llama import llama_logging
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job's children start with SIGINT ignored
llama_logging.configure(verbose=False)
params = llama_cpp.llama_model_quantize_default_params()
params.ftype, params.nthread = 12, 1  # Q3_K_M: about a second for this model
signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGINT))
signal.setitimer(signal.ITIMER_REAL, 0.2)  # Ctrl-C while llama.cpp is inside the call, logging
try:
    llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params)
except KeyboardInterrupt:
    print("interrupted")
"""


def test_ctrl_c_inside_a_llama_call_is_not_swallowed_by_the_log_callback(slow_checkpoint, tmp_path):
    """Quiet logging runs no Python inside llama.cpp, so the interrupt is raised when the call returns
    (with llama-cpp-python's Python callback, ctypes printed a traceback and the interrupt was lost)."""
    float_pair = convert_checkpoint(slow_checkpoint, tmp_path, "BF16", "F16", name="float")
    done = subprocess.run(
        [sys.executable, "-c", IN_PROCESS_QUANTIZE, str(float_pair.model), str(tmp_path / "q8.gguf")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "interrupted", (done.stdout, done.stderr)
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
