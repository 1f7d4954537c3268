"""batch and the atomic write against odd input: bad fields, odd ids, bytes that are not UTF-8, duplicate ids,
an -o that is not a file, and targets that are FIFOs (real FIFOs, never the machine's own devices)."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
from faults import SMOLCLI, error_line, smolcli

from smolcli.errors import BadInput
from smolcli.util.atomic_file import write_atomically


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_every_field_of_an_item_is_checked_and_a_bad_one_is_its_error_line(tiny_pair, tmp_path):
    requests = [
        {"id": "system-number", "prompt": "hi", "system": 5},
        {"id": "system-list", "prompt": "hi", "system": ["x"]},
        {"id": "temp-text", "prompt": "hi", "temperature": "hot"},
        {"id": "tokens-bool", "prompt": "hi", "max_tokens": True},
        {"id": None, "prompt": "hi"},
        {"id": 1.0, "prompt": "hi"},
        {"id": {"a": 1}, "prompt": "hi"},
        {"id": 7, "prompt": "hi", "max_tokens": 2},
        {"id": "fine", "prompt": "hi", "max_tokens": 2},
    ]
    text = "\n".join(json.dumps(r) for r in requests)
    text += '\n{"id": "big", "max_tokens": ' + "9" * 5000 + "}\n" + "[" * 100_000 + "\n"
    path = tmp_path / "requests.jsonl"
    path.write_text(text)
    done = smolcli("batch", "-m", tiny_pair[0], path)
    assert done.returncode == 3, done.stderr  # the batch ran to the end; some items failed
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr, done.stderr
    lines = _lines(done.stdout)
    assert len(lines) == 11
    errors = {line["id"]: line["error"] for line in lines if "error" in line}
    assert errors["system-number"] == errors["system-list"] == "system must be a string"
    assert "temperature" in errors["temp-text"] and "max_tokens" in errors["tokens-bool"]
    for number, shown in ((5, "null"), (6, "1.0"), (7, '{"a": 1}')):
        assert errors[f"line-{number}"] == f"line {number}: id {shown} must be a string or an integer"
    assert "digits" in errors["line-10"] and "deep" in errors["line-11"]
    answered = [line["id"] for line in lines if "text" in line]
    assert answered == ["7", "fine"]


def test_a_prompt_that_is_not_utf8_is_refused_like_ask_refuses_it(tiny_pair, tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b'{"id": "bad", "prompt": "caf\xe9"}\n{"id": "good", "prompt": "hi", "max_tokens": 2}\n')
    for args, stdin in (((path,), None), (("-",), path.read_bytes())):
        done = subprocess.run(
            [*SMOLCLI, "batch", "-m", str(tiny_pair[0]), *map(str, args)], input=stdin, capture_output=True, timeout=120
        )
        lines = _lines(done.stdout.decode())
        assert done.returncode == 3 and "Traceback" not in done.stderr.decode()
        assert lines[0] == {"id": "line-1", "error": "line 1 is not valid UTF-8 text; save the file as UTF-8"}
        assert "\ufffd" not in done.stdout.decode().split("\n")[0] and "text" in lines[1]


def test_duplicate_ids_are_refused_before_any_work(tiny_pair, tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text('{"id": "x", "prompt": "a"}\n{"id": "y", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n')
    out = tmp_path / "out.jsonl"
    error_line(smolcli("batch", "-m", tiny_pair[0], path, "-o", out), "'x'", "lines 1, 3")
    assert not out.exists()
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    error_line(smolcli("batch", "-m", tiny_pair[0], "--prompt", "hi", image, image), str(image), "2 times")


def test_output_that_is_not_a_regular_file_is_refused_and_never_read(tiny_pair, tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text('{"id": "a", "prompt": "hi", "max_tokens": 2}\n')
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    # a FIFO nothing writes to: reading it whole used to block forever (as /dev/stdout on a pipe did)
    error_line(smolcli("batch", "-m", tiny_pair[0], path, "-o", fifo, timeout=30), str(fifo), "named pipe")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    # a link to a device, never the device itself: were the check to regress, a rename would replace only the link
    device = tmp_path / "device-link"
    device.symlink_to(os.devnull)
    error_line(smolcli("batch", "-m", tiny_pair[0], path, "-o", device), str(device), "device")
    assert device.is_symlink()
    error_line(smolcli("batch", "-m", tiny_pair[0], path, "-o", tmp_path), str(tmp_path), "folder")


def test_resume_reads_the_output_line_by_line_and_cuts_a_torn_line(tiny_pair, tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text('{"id": "a", "prompt": "hi", "max_tokens": 2}\n{"id": "b", "prompt": "hi", "max_tokens": 2}\n')
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "text": "old"}\n{"id": "b", "te')
    done = smolcli("batch", "-m", tiny_pair[0], path, "-o", out)
    assert done.returncode == 0, done.stderr
    lines = _lines(out.read_text())
    assert [line["id"] for line in lines] == ["a", "b"] and lines[0]["text"] == "old"


def test_the_atomic_write_never_renames_over_a_fifo_or_a_device(tmp_path):
    fifo = tmp_path / "target.fifo"
    os.mkfifo(fifo)
    link = tmp_path / "to-null"
    link.symlink_to("/dev/null")
    for target, kind in ((fifo, "named pipe"), (link, "device"), (tmp_path, "folder")):
        with pytest.raises(BadInput, match=kind):
            write_atomically(target, b"data")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target.fifo", "to-null"]  # no temporary left
    plain = tmp_path / "plain.txt"
    write_atomically(plain, b"one")
    write_atomically(plain, b"two")
    assert plain.read_bytes() == b"two"


def test_chat_save_to_a_fifo_and_a_nul_in_a_path_are_one_line_and_the_chat_goes_on(tiny_pair, tmp_path):
    fifo = tmp_path / "chat.fifo"
    os.mkfifo(fifo)
    script = f"/save {fifo}\n/image {tmp_path}/a\x00b.png\n/save {tmp_path}/x\x00y.json\nhello\n"
    done = smolcli("chat", "-m", tiny_pair[0], "-n", "2", input=script, timeout=60)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, done.stderr
    assert "named pipe" in errors[0] and "NUL" in errors[1] and "NUL" in errors[2]
    assert "Traceback" not in done.stderr and "saved" not in done.stderr
    assert done.stdout.strip(), "the chat ended before answering"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_sidecar_that_is_a_fifo_is_that_items_error(tiny_pair, images, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(images["square"].read_bytes())
    os.mkfifo(tmp_path / "photo.txt")
    done = smolcli("batch", "-m", tiny_pair[0], "--prompt", "hi", "-n", "2", photo, "--sidecar", "--overwrite")
    assert done.returncode == 3, done.stderr
    (line,) = _lines(done.stdout)
    assert "named pipe" in line["error"] and stat.S_ISFIFO(os.stat(tmp_path / "photo.txt").st_mode)


def test_an_item_with_thousands_of_images_is_refused_before_reading_them(tiny_pair, tmp_path):
    path = tmp_path / "requests.jsonl"
    # none of these files exist: reaching them at all would be an error naming a file
    path.write_text(json.dumps({"id": "many", "prompt": "hi", "images": [f"missing-{i}.png" for i in range(5000)]}))
    done = smolcli("batch", "-m", tiny_pair[0], path, timeout=60)
    (line,) = _lines(done.stdout)
    assert done.returncode == 3 and "5000 images" in line["error"] and "missing" not in line["error"], line
