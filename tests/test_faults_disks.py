"""Full disks, read-only folders, unwritable stdout and damaged caches: one line each, nothing left behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from faults import error_line, hidden_leftovers, read_only_folder, small_disk, smolcli

from smolcli.runtime.vision.mmproj_variant import variant_files
from smolcli.util.os_errors import os_error_text


@pytest.mark.parametrize(
    "quant, size, step",
    [("F16", "1M", "writing the model"), ("Q4_K_M", "3200k", "llama.cpp's quantizer")],
)
def test_convert_onto_a_full_disk(numpy_checkpoint, tmp_path, quant, size, step):
    """1 MB takes the tiny mmproj but not its 2.7 MB F16 model; 3.2 MB takes the BF16 intermediate but
    not the quantized model beside it."""
    with small_disk(tmp_path / "disk", size) as disk:
        outdir = disk / "out"
        done = smolcli("convert", numpy_checkpoint(), "-o", outdir, "-q", quant)
        line = error_line(done, str(outdir), "no space left on this disk", "--outdir", progress=True)
        assert "nothing was written" in line, step
        assert list(outdir.iterdir()) == [], "a stage or half a pair was left on the full disk"


def test_convert_into_a_read_only_folder(numpy_checkpoint, tmp_path):
    with read_only_folder(tmp_path / "ro") as folder:
        error_line(
            smolcli("convert", numpy_checkpoint(), "-o", folder, "-q", "F16"), str(folder), "read-only", progress=True
        )
        error_line(
            smolcli("convert", numpy_checkpoint(), "-o", folder / "sub"),
            str(folder / "sub"),
            "read-only",
            progress=True,
        )


def test_outdir_that_is_a_file(numpy_checkpoint, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    error_line(smolcli("convert", numpy_checkpoint(), "-o", afile), "--outdir", "is a file, not a folder")


def test_a_read_only_home_does_not_stop_an_answer_that_needs_no_cache(tiny_pair, images, tmp_path):
    with read_only_folder(tmp_path / "home") as home:
        done = smolcli(
            "ask", "-m", tiny_pair[0], "-i", images["square"], "-n", "2", "hi", env={"SMOLCLI_HOME": str(home)}
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "error" not in done.stderr
        # an image size needs a copy of the mmproj there: that one says where and what to do
        resized = smolcli(
            "ask",
            "-m",
            tiny_pair[0],
            "-i",
            images["square"],
            "--image-size",
            "192",
            "hi",
            env={"SMOLCLI_HOME": str(home)},
        )
        error_line(resized, str(home), "SMOLCLI_HOME")


def test_demo_with_a_read_only_home(tmp_path):
    with read_only_folder(tmp_path / "home") as home:
        error_line(smolcli("demo", env={"SMOLCLI_HOME": str(home)}), str(home), "read-only", progress=True)


def test_cache_clear_does_not_count_what_it_could_not_remove(tiny_pair, images, tmp_path):
    home = tmp_path / "home"
    assert (
        smolcli(
            "ask", "-m", tiny_pair[0], "-i", images["square"], "-n", "1", "hi", env={"SMOLCLI_HOME": str(home)}
        ).returncode
        == 0
    )
    entries = list((home / "embeddings").glob("*.emb*"))
    assert entries
    files = {str(p.relative_to(home)): p.read_bytes() for p in (home / "embeddings").iterdir() if p.is_file()}
    with read_only_folder(tmp_path / "ro-home", files) as ro_home:
        done = smolcli("cache", "clear", env={"SMOLCLI_HOME": str(ro_home)})
        line = error_line(done, "removed 0 of", "could not be removed")
        assert str(ro_home / "embeddings") in line


def test_a_damaged_mmproj_size_copy_is_rebuilt(tiny_pair, images, private_smolcli_home):
    args = ("ask", "-m", tiny_pair[0], "-i", images["square"], "--image-size", "192", "-n", "2", "hi")
    first = smolcli(*args)
    assert first.returncode == 0, first.stderr
    (copy,) = variant_files()
    copy.write_bytes(copy.read_bytes()[:1000])  # cut short, as a full disk would
    again = smolcli(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout  # the same answer, from a whole copy
    assert copy.stat().st_size == tiny_pair[1].stat().st_size


@pytest.mark.parametrize("command", ["models", "ask"])
def test_stdout_on_a_full_device(tiny_pair, command):
    args = {"models": ["models"], "ask": ["ask", "-m", str(tiny_pair[0]), "-n", "4", "hi"]}[command]
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "smolcli", *args], stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "stdout: no space left" in lines[0] and "Traceback" not in done.stderr, done.stderr


def test_stdout_closed(tiny_pair):
    done = subprocess.run(
        [sys.executable, "-m", "smolcli", "ask", "-m", str(tiny_pair[0]), "hi"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: stdout is closed, so the output has nowhere to go; redirect it (> out.txt or > /dev/null)"
    ]


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.ENOSPC, "no space left"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
        (errno.EISDIR, "is a folder"),
        (errno.ELOOP, "loop of symbolic links"),
        (errno.EEXIST, "already exists"),
    ],
)
def test_each_os_error_class_reads_as_one_line_naming_the_file(code, words):
    line = os_error_text(OSError(code, os.strerror(code), "/some/file"))
    assert line.startswith("/some/file: ") and words in line and ";" in line and "Errno" not in line


def test_no_hidden_files_after_the_disk_tests(tmp_path):
    assert hidden_leftovers(tmp_path) == []
