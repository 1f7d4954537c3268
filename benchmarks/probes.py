"""Hostile-but-fair probes of every class in issues 15 and 24, run against the real CLI and a real `smolcli serve`
on loopback; prints counts by class.

    python benchmarks/probes.py            # builds a tiny random pair in a temporary folder (no download)

A probe is clean when the run ends with the expected exit code, prints no traceback and no Python
exception name, gives exactly one `error:` line naming the thing (for a refusal), and leaves no hidden
stage or temporary file behind. Probes that need a tmpfs mount are counted as skipped where mounting is
not permitted.
"""

from __future__ import annotations

import copy
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from smolcli.convert import convert_checkpoint
from smolcli.models.smolvlm_shapes import SHAPES
from smolcli.synthetic.clips import write_timed_clip
from smolcli.synthetic.images import png_claiming
from smolcli.synthetic.random_checkpoint import write_random_checkpoint

CLI = [sys.executable, "-m", "smolcli"]
PYTHON_NAMES = ("Traceback", "unexpected", "Errno", "Error:", "Warning:")


def run(*args, env=None, stdin=None, stdout=None, **kwargs):
    return subprocess.run(
        [*CLI, *map(str, args)],
        env={**os.environ, **(env or {})},
        input=stdin,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=120,
        **kwargs,
    )


def clean(done, code, *words, leftovers_in=None, errors=1) -> str:
    """'' when clean, else what is wrong."""
    err = done.stderr.decode(errors="replace") if isinstance(done.stderr, bytes) else done.stderr
    if done.returncode != code:
        return f"exit {done.returncode}, wanted {code}: {err.strip()[-200:]}"
    if any(name in err for name in PYTHON_NAMES):
        return f"names Python: {err.strip()[-200:]}"
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    if len(error_lines) != errors:
        return f"{len(error_lines)} error lines: {err.strip()[-200:]}"
    for word in words:
        if error_lines and word not in error_lines[-1]:
            return f"{word!r} not in {error_lines[-1]!r}"
    if leftovers_in is not None and Path(leftovers_in).exists():
        left = [p.name for p in Path(leftovers_in).rglob("*") if p.name.startswith(".")]
        if left:
            return f"left behind: {left}"
    return ""


def mount(path: Path, size: str, read_only: bool = False) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    ).returncode:
        return False
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True)
    return True


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="smolcli-probes-"))
    os.environ["SMOLCLI_HOME"] = str(work / "home")
    checkpoint = write_random_checkpoint(work / "ckpt", "tiny", "SmolVLM", "BF16", seed=0)
    pair = convert_checkpoint(checkpoint, work / "pair", "F16", "F16", name="tiny")
    model = pair.model
    rng = np.random.default_rng(1)
    pictures = work / "pictures"
    pictures.mkdir()
    photo = pictures / "photo.png"
    Image.fromarray(rng.integers(0, 256, (60, 80, 3)).astype(np.uint8)).save(photo)
    mounts: list[Path] = []
    results: dict[str, list[tuple[str, str]]] = {}

    def probe(klass: str, name: str, outcome) -> None:
        try:
            verdict = outcome() if callable(outcome) else outcome
        except Exception as error:  # noqa: BLE001 - a probe that breaks is a finding, not a crash of the script
            verdict = f"probe raised {type(error).__name__}: {error}"
        results.setdefault(klass, []).append((name, verdict))

    # --- wrong answers with exit 0 -----------------------------------------------------------------------
    from smolcli.runtime.vision.images import load_image

    rgba = np.zeros((20, 20, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(pictures / "clear.png")
    probe(
        "wrong answers",
        "transparent RGBA is white",
        lambda: "" if set(load_image(pictures / "clear.png").pixels) == {255} else "black",
    )
    grey = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    for suffix in ("png", "tif"):
        Image.fromarray(grey).save(pictures / f"grey16.{suffix}")
        probe(
            "wrong answers",
            f"16-bit grey {suffix} not clipped",
            lambda s=suffix: (
                "" if np.frombuffer(load_image(pictures / f"grey16.{s}").pixels, np.uint8).mean() < 140 else "clipped"
            ),
        )

    def duplicates():
        import smolcli

        with smolcli.load(model) as loaded:
            usage = loaded.ask("hi", images=[photo, photo, photo], max_tokens=1).usage
        return "" if usage.image_cache_hits == 2 * usage.images_encoded else f"{usage}"

    probe("wrong answers", "same image thrice encoded once", duplicates)

    # --- signals and partial work ------------------------------------------------------------------------
    shape = copy.deepcopy(SHAPES["tiny"])
    shape["text"].update(
        hidden_size=1024, intermediate_size=2816, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=4
    )
    slow = write_random_checkpoint(work / "slow", shape, "SmolVLM", "BF16", seed=2)

    def signalled(number, code, group):
        outdir = work / f"sig-{number}"
        child = subprocess.Popen(
            [*CLI, "convert", str(slow), "-o", str(outdir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for line in child.stderr:
            if "quantizing" in line:
                break
        time.sleep(1.0)
        started = time.monotonic()
        (os.killpg if group else os.kill)(child.pid, number)
        _, err = child.communicate(timeout=60)
        took = time.monotonic() - started
        if number == signal.SIGKILL:
            time.sleep(0.5)
            convert_checkpoint(checkpoint, outdir, "F16", "F16", name="next")
            left = [p.name for p in outdir.iterdir() if p.name.startswith(".")]
            return f"stage left: {left}" if left else ""
        if child.returncode != code or took > 2 or "Traceback" in err:
            return f"exit {child.returncode} after {took:.1f} s: {err.strip()[-200:]}"
        return "" if not list(outdir.iterdir()) else f"left: {list(outdir.iterdir())}"

    probe("signals", "Ctrl-C mid-quantize", lambda: signalled(signal.SIGINT, 130, True))
    probe("signals", "SIGTERM mid-quantize", lambda: signalled(signal.SIGTERM, 143, False))
    probe("signals", "SIGKILL then convert again", lambda: signalled(signal.SIGKILL, -9, False))

    # --- bounds -------------------------------------------------------------------------------------------
    for threads in ("100000", "20000", "0"):
        probe(
            "bounds",
            f"ask --threads {threads}",
            lambda t=threads: clean(run("ask", "-m", model, "-t", t, "hi"), 1, "--threads"),
        )
    probe(
        "bounds",
        "convert --threads 100000",
        lambda: clean(run("convert", checkpoint, "-o", work / "t", "-t", "100000"), 1, "--threads"),
    )
    probe("bounds", "bench --threads 100000", lambda: clean(run("bench", "-t", "100000"), 1, "--threads"))
    probe(
        "bounds",
        "--image-size 100000",
        lambda: clean(run("ask", "-m", model, "-i", photo, "--image-size", "100000", "hi"), 1, "--image-size"),
    )
    for width, height in ((1, 8000), (200, 1), (10, 2000)):
        path = pictures / f"thin-{width}x{height}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3)).astype(np.uint8)).save(path)
        probe(
            "bounds",
            f"{width}x{height} image",
            lambda p=path: clean(run("ask", "-m", model, "-i", p, "-n", "1", "hi"), 0, errors=0),
        )
    for flag, value in (("--temperature", "-1"), ("--temperature", "nan"), ("--top-p", "nan"), ("--top-k", "-3")):
        probe("bounds", f"{flag} {value}", lambda f=flag, v=value: clean(run("ask", "-m", model, f, v, "hi"), 1, f))
    probe("bounds", "-i /dev/zero", lambda: clean(run("ask", "-m", model, "-i", "/dev/zero", "hi"), 1, "/dev/zero"))
    for name in ("../../x", "a b/c"):
        probe(
            "bounds",
            f"--name {name}",
            lambda n=name: clean(run("convert", checkpoint, "-o", work / "n", "--name", n), 1, "--name"),
        )
    chat_lines = f"/image {photo}\nDescribe.\nHello\n".encode()
    probe(
        "bounds",
        "chat drops a refused image",
        lambda: clean(
            run("chat", "-m", model, "--ctx", "256", "--image-size", "384", "-n", "2", stdin=chat_lines), 1, "dropped"
        ),
    )

    # --- messages naming Python ---------------------------------------------------------------------------
    bomb = png_claiming(pictures / "bomb.png", 30000, 30000)
    probe("messages", "decompression bomb", lambda: clean(run("ask", "-m", model, "-i", bomb, "hi"), 1, "bomb.png"))
    (pictures / "loop-a").symlink_to(pictures / "loop-b")
    (pictures / "loop-b").symlink_to(pictures / "loop-a")
    probe(
        "messages", "symlink loop", lambda: clean(run("ask", "-m", model, "-i", pictures / "loop-a", "hi"), 1, "loop")
    )
    probe("messages", "image is a folder", lambda: clean(run("ask", "-m", model, "-i", pictures, "hi"), 1, "folder"))
    probe(
        "messages", "surrogate in prompt", lambda: clean(run("ask", "-m", model, os.fsdecode(b"caf\xe9")), 1, "UTF-8")
    )
    probe(
        "messages",
        "bad byte in a chat line",
        lambda: clean(run("chat", "-m", model, "-n", "1", stdin=b"caf\xe9\nhi\n"), 1, "UTF-8"),
    )
    (work / "afile").write_text("x")
    probe("messages", "--outdir is a file", lambda: clean(run("convert", checkpoint, "-o", work / "afile"), 1, "afile"))
    probe(
        "messages",
        "/save into a folder",
        lambda: clean(run("chat", "-m", model, "-n", "1", stdin=f"/save {work}\n".encode()), 1, str(work)),
    )
    with open("/dev/full", "w") as full:
        probe("messages", "stdout is /dev/full", lambda: clean(run("models", stdout=full), 1, "stdout"))
    probe(
        "messages",
        "stdout closed",
        lambda: clean(run("models", stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1)), 1, "stdout"),
    )

    def damaged_copy():
        args = ("ask", "-m", model, "-i", photo, "--image-size", "192", "-n", "1", "hi")
        run(*args)
        copies = list((work / "home" / "mmproj-sizes").glob("*.gguf"))
        copies[0].write_bytes(b"GGUF")
        return clean(run(*args), 0, errors=0)

    probe("messages", "damaged mmproj-size copy", damaged_copy)
    disk = work / "full"
    if mount(disk, "1M"):
        mounts.append(disk)
        probe(
            "messages",
            "full disk (convert F16)",
            lambda: clean(run("convert", checkpoint, "-o", disk / "o", "-q", "F16"), 1, "no space", leftovers_in=disk),
        )
        probe(
            "messages",
            "full disk (convert Q4_K_M)",
            lambda: clean(run("convert", checkpoint, "-o", disk / "q"), 1, "no space", leftovers_in=disk),
        )
    else:
        results.setdefault("messages", []).append(("full disk", "skipped: cannot mount a tmpfs"))
    ro = work / "ro"
    if mount(ro, "1M", read_only=True):
        mounts.append(ro)
        probe("messages", "read-only --outdir", lambda: clean(run("convert", checkpoint, "-o", ro), 1, "read-only"))
        probe(
            "messages",
            "read-only SMOLCLI_HOME, plain ask",
            lambda: clean(
                run("ask", "-m", model, "-i", photo, "-n", "1", "hi", env={"SMOLCLI_HOME": str(ro)}), 0, errors=0
            ),
        )
        probe(
            "messages",
            "read-only SMOLCLI_HOME, demo",
            lambda: clean(run("demo", env={"SMOLCLI_HOME": str(ro)}), 1, str(ro)),
        )
        probe(
            "messages",
            "read-only SMOLCLI_HOME, --image-size",
            lambda: clean(
                run("ask", "-m", model, "-i", photo, "--image-size", "192", "hi", env={"SMOLCLI_HOME": str(ro)}),
                1,
                str(ro),
            ),
        )
    else:
        results.setdefault("messages", []).append(("read-only folders", "skipped: cannot mount a tmpfs"))

    issue_24_probes(probe, work, model, photo)

    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)

    server_probes(model, work, probe)

    totals = Counter()
    for klass, outcomes in results.items():
        ok = sum(1 for _, verdict in outcomes if verdict == "")
        skipped = sum(1 for _, verdict in outcomes if verdict.startswith("skipped"))
        print(f"{klass}: {ok} clean of {len(outcomes)}" + (f" ({skipped} skipped)" if skipped else ""))
        for name, verdict in outcomes:
            if verdict:
                print(f"  - {name}: {verdict}")
        totals.update(clean=ok, probes=len(outcomes))
    print(f"all: {totals['clean']} clean of {totals['probes']}")
    return 0 if totals["clean"] == totals["probes"] else 1


# --- issue 24: a server that waits forever, its parser, its start -------------------------------------------


def _served(model: Path, work: Path, *options: str) -> tuple[subprocess.Popen, int, Path]:
    import re

    log = work / "serve.log"
    process = subprocess.Popen(
        [*CLI, "serve", "-m", str(model), "--port", "0", "--threads", "2", *options],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    for _ in range(600):
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return process, int(found.group(1)), log
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not start: {log.read_text()[-300:]}")


def _http(port: int, body: bytes | dict, timeout: float = 60) -> tuple[int, dict, float]:
    import http.client
    import json

    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    connection.request("POST", "/v1/chat/completions", body=raw, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    text = response.read()
    connection.close()
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {"raw": text[:200].decode(errors="replace")}
    return response.status, answer, time.monotonic() - started


def _raw_until_closed(sock, within: float) -> tuple[bytes, float]:
    started = time.monotonic()
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received, time.monotonic() - started


def _status_is(status: int, answer: dict, wanted: int, *words: str, param: str | None = None) -> str:
    if status != wanted:
        return f"{status}, wanted {wanted}: {str(answer)[:200]}"
    message = answer.get("error", {}).get("message", "")
    if "\n" in message or any(name in message for name in PYTHON_NAMES):
        return f"not one clean line: {message[:200]}"
    for word in words:
        if word not in message:
            return f"{word!r} not in {message!r}"
    if param is not None and answer["error"].get("param") != param:
        return f"param {answer['error'].get('param')!r}, wanted {param!r}"
    return ""


def server_probes(model: Path, work: Path, probe) -> None:
    """Issue 24's server classes against a real `smolcli serve` with short limits, then its start-up refusals."""
    import base64
    import socket
    import struct
    import threading
    import zlib

    hello = {"messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 2}
    slow = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:  # /slow: a byte every 0.2 s; anything else: 404
        slow.settimeout(0.2)
        while not stop.is_set():
            try:
                sock, _ = slow.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=answer_slowly, args=(sock,), daemon=True).start()

    def answer_slowly(sock) -> None:
        with sock:
            try:
                if not sock.recv(4096).startswith(b"GET /slow"):
                    sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                for _ in range(150):
                    if stop.wait(0.2):
                        return
                    sock.sendall(b"\0")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    slow_url = f"http://127.0.0.1:{slow.getsockname()[1]}"
    limits = ["--timeout", "6", "--header-timeout", "2", "--body-timeout", "2", "--fetch-timeout", "2"]
    process, port, log = _served(model, work, "--allow-remote", "--max-images", "50", *limits)

    def stalled_body():
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{}")
        return sock

    def body_408() -> str:
        raw, took = _raw_until_closed(stalled_body(), 10)
        return "" if raw.startswith(b"HTTP/1.1 408") and took < 5 else f"{raw[:60]!r} after {took:.1f} s"

    def slowloris_408() -> str:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        for round_ in range(15):
            for sock in socks:
                try:
                    sock.sendall(f"X-{round_}: 1\r\n".encode())
                except OSError:
                    pass
            time.sleep(0.2)
        answers = [_raw_until_closed(sock, 10)[0] for sock in socks]
        held = sum(1 for raw in answers if not raw.startswith(b"HTTP/1.1 408"))
        return "" if held == 0 else f"{held} of 40 not answered 408"

    def idle_closed() -> str:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
        took = max(_raw_until_closed(sock, 10)[1] for sock in socks)
        return "" if took < 6 else f"held {took:.1f} s"

    def slow_urls() -> str:
        parts = [{"type": "image_url", "image_url": {"url": slow_url + "/slow"}}] * 45
        status, answer, took = _http(port, {"messages": [{"role": "user", "content": parts}]})
        if status not in (400, 408) or took > 8:
            return f"{status} after {took:.1f} s: {str(answer)[:120]}"
        return ""

    def png_header(side: int) -> str:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        head = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
        return "data:image/png;base64," + base64.b64encode(png).decode()

    try:
        klass = "server waits forever"
        probe(klass, "Content-Length 1000, 2 bytes sent", body_408)
        probe(klass, "40 slowloris connections", slowloris_408)
        probe(klass, "300 idle connections", idle_closed)
        probe(klass, "45 slow remote URLs", slow_urls)
        klass = "server parser"
        probe(klass, "100k nested [", lambda: _status_is(*_http(port, b"[" * 100_000)[:2], 400, "deep"))
        digits = b'{"messages": [{"role": "user", "content": "hi"}], "seed": ' + b"7" * 5000 + b"}"
        probe(klass, "5000-digit integer", lambda: _status_is(*_http(port, digits)[:2], 400, "digits"))
        for side in (14_000, 20_000, 100_000):
            picture = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]}]}
            picture["messages"][0]["content"][0]["image_url"]["url"] = png_header(side)
            probe(klass, f"PNG header {side}x{side}", lambda p=picture: _status_is(*_http(port, p)[:2], 413))
        probe(
            klass,
            "logit_bias",
            lambda: _status_is(*_http(port, hello | {"logit_bias": {"1": 5}})[:2], 400, param="logit_bias"),
        )
        turns = [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            {"role": "user", "content": "b"},
        ]
        probe(
            klass,
            "assistant tool_calls",
            lambda: _status_is(*_http(port, {"messages": turns})[:2], 400, param="messages[1].tool_calls"),
        )
        missing = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]}]}
        missing["messages"][0]["content"][0]["image_url"]["url"] = slow_url + "/gone.png"
        probe(klass, "remote 404", lambda: _status_is(*_http(port, missing)[:2], 400, slow_url, "HTTP 404"))
        probe(klass, "/openapi.json", lambda: "" if b'"openapi"' in _openapi(port) else "no description")
        probe(klass, "a good request after", lambda: _status_is(*_http(port, hello)[:2], 200))

        def sigterm() -> str:
            stalled = stalled_body()
            idle = socket.create_connection(("127.0.0.1", port), timeout=10)
            time.sleep(0.3)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
            took = time.monotonic() - started
            stalled.close()
            idle.close()
            return "" if code == 0 and took < 5 else f"exit {code} after {took:.1f} s"

        probe("server waits forever", "SIGTERM with a stalled and an idle client", sigterm)
    finally:
        stop.set()
        slow.close()
        process.kill()

    klass = "serve start"
    taken = socket.create_server(("127.0.0.1", 0))
    in_use = str(taken.getsockname()[1])
    probe(klass, "port in use", lambda: clean(run("serve", "-m", model, "-p", in_use), 1, in_use))
    taken.close()
    probe(klass, "--host 999.1.1.1", lambda: clean(run("serve", "-m", model, "--host", "999.1.1.1"), 1, "999.1.1.1"))
    for value in ("nan", "inf"):
        probe(klass, f"--timeout {value}", lambda v=value: clean(run("serve", "-m", model, "--timeout", v), 1, v))
    probe(
        klass,
        "SMOLCLI_API_KEY=",
        lambda: clean(run("serve", "-m", model, env={"SMOLCLI_API_KEY": ""}), 1, "SMOLCLI_API_KEY"),
    )
    probe(
        klass,
        "--offline --allow-remote",
        lambda: clean(run("serve", "-m", model, "--offline", "--allow-remote"), 1, "offline"),
    )
    probe(
        klass,
        "HF_HUB_OFFLINE=1 --allow-remote",
        lambda: clean(run("serve", "-m", model, "--allow-remote", env={"HF_HUB_OFFLINE": "1"}), 1, "offline"),
    )


def _openapi(port: int) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=10) as response:  # noqa: S310
        return response.read()


def _answers(done) -> list[dict]:
    import json

    return [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]


def issue_24_probes(probe, work: Path, model: Path, photo: Path) -> None:
    """Schemas and grammars, batch, the atomic write, video and serve: the classes of issue 24 (part A)."""
    import json

    # --- crashes: the whole process died (a segfault in llama.cpp, RecursionError, an uncaught error) ----------
    def schema(text, *words):
        return lambda: clean(run("ask", "-m", model, "--json-schema", text, "hi"), 1, "--json-schema", *words)

    probe("crashes", "maxLength 100000", schema('{"type":"string","maxLength":100000}', "/maxLength"))
    probe("crashes", "maxItems 1e6", schema('{"type":"array","items":{},"maxItems":1000000}', "/maxItems"))
    deep = {"type": "string"}
    for _ in range(300):
        deep = {"type": "object", "properties": {"a": deep}}
    probe("crashes", "schema 300 deep", schema(json.dumps(deep), "deep"))
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}}
    probe("crashes", "3000 properties", schema(json.dumps(wide), "properties"))
    probe("crashes", "100k nested [", schema("[" * 100_000, "deep"))
    probe("crashes", "5000-digit integer", schema('{"maxLength": ' + "9" * 5000 + "}", "digits"))
    probe("crashes", "minLength above maxLength", schema('{"type":"string","minLength":5,"maxLength":2}', "/minLength"))
    nested = work / "nested.gbnf"
    nested.write_text("root ::= " + "(" * 100_000 + '"a"' + ")" * 100_000 + "\n")
    probe(
        "crashes",
        "grammar of 100k parentheses",
        lambda: clean(run("ask", "-m", model, "--grammar", nested, "hi"), 1, "deep"),
    )
    chat = f"/image {work}/a\x00b.png\n/save {work}/c\x00d.json\nhello\n".encode()
    probe(
        "crashes",
        "NUL in chat /image and /save",
        lambda: clean(run("chat", "-m", model, "-n", "1", stdin=chat), 1, "NUL", errors=2),
    )
    clip = work / "clip.mp4"
    write_timed_clip(clip, [i / 4 for i in range(8)])
    probe(
        "crashes",
        "--fps inf",
        lambda: clean(run("ask", "-m", model, "--video", clip, "--fps", "inf", "hi"), 1, "--fps"),
    )

    # --- batch ---------------------------------------------------------------------------------------------------
    requests = work / "requests.jsonl"

    def batch_item(line: str, word: str):
        def check():
            requests.write_text(line + "\n" + '{"id": "fine", "prompt": "hi", "max_tokens": 1}\n')
            done = run("batch", "-m", model, requests)
            answers = _answers(done)
            if done.returncode != 3 or len(answers) != 2 or "text" not in answers[1]:
                return f"exit {done.returncode}: {done.stdout[-200:]!r} {done.stderr[-200:]!r}"
            return "" if word in answers[0].get("error", "") else f"{answers[0]}"

        return check

    probe("batch", "system a number", batch_item('{"id": "a", "prompt": "hi", "system": 5}', "system"))
    probe("batch", "system a list", batch_item('{"id": "a", "prompt": "hi", "system": ["x"]}', "system"))
    probe("batch", "id null", batch_item('{"id": null, "prompt": "hi"}', "id null"))
    probe("batch", "id an object", batch_item('{"id": {"a": 1}, "prompt": "hi"}', "id"))
    probe("batch", "5000-digit max_tokens", batch_item('{"id": "a", "max_tokens": ' + "9" * 5000 + "}", "digits"))
    probe(
        "batch",
        "schema maxLength 100000",
        batch_item('{"id": "a", "prompt": "hi", "json_schema": {"type": "string", "maxLength": 100000}}', "maxLength"),
    )
    probe(
        "batch",
        "5000 images refused first",
        batch_item(json.dumps({"id": "a", "prompt": "hi", "images": [str(photo)] * 5000}), "5000 images"),
    )

    def invalid_utf8():
        requests.write_bytes(b'{"id": "a", "prompt": "caf\xe9"}\n')
        done = run("batch", "-m", model, requests)
        answers = _answers(done)
        return "" if done.returncode == 3 and "UTF-8" in answers[0].get("error", "") else f"{answers}"

    probe("batch", "prompt not UTF-8", invalid_utf8)

    def duplicates():
        requests.write_text('{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n')
        return clean(run("batch", "-m", model, requests), 1, "'x'", "lines 1, 2")

    probe("batch", "duplicate ids", duplicates)
    fifo = work / "out.fifo"
    os.mkfifo(fifo)
    requests.write_text('{"id": "fine", "prompt": "hi", "max_tokens": 1}\n')
    probe("batch", "-o a FIFO", lambda: clean(run("batch", "-m", model, requests, "-o", fifo), 1, "named pipe"))
    # devices are reached through a link, never named: an old smolcli renames over its target, and renaming over
    # the link replaces only the link (this script once replaced the machine's /dev/null when run on old code)
    device = work / "device-link"
    device.symlink_to(os.devnull)
    probe("batch", "-o a device", lambda: clean(run("batch", "-m", model, requests, "-o", device), 1, "device"))

    # --- data loss: never rename over what is not a regular file -------------------------------------------------
    save = f"/save {fifo}\nhello\n".encode()

    def fifo_kept(done):
        verdict = clean(done, 1, "named pipe")
        return verdict or ("" if stat.S_ISFIFO(os.stat(fifo).st_mode) else "the FIFO was replaced")

    probe("data loss", "chat /save to a FIFO", lambda: fifo_kept(run("chat", "-m", model, "-n", "1", stdin=save)))
    probe(
        "data loss",
        "chat /save to a device",
        lambda: clean(run("chat", "-m", model, "-n", "1", stdin=f"/save {device}\nhello\n".encode()), 1, "device"),
    )
    side = work / "side"
    side.mkdir()
    (side / "photo.png").write_bytes(photo.read_bytes())
    os.mkfifo(side / "photo.txt")

    def sidecar():
        done = run("batch", "-m", model, "--prompt", "hi", "-n", "1", side / "photo.png", "--sidecar", "--overwrite")
        answers = _answers(done)
        if not stat.S_ISFIFO(os.stat(side / "photo.txt").st_mode):
            return "the FIFO was replaced"
        return "" if done.returncode == 3 and "named pipe" in answers[0].get("error", "") else f"{answers}"

    probe("data loss", "--sidecar onto a FIFO", sidecar)

    # --- unclear messages ----------------------------------------------------------------------------------------------
    probe("unclear messages", "empty enum", schema('{"enum": []}', "/enum"))
    probe("unclear messages", "back-reference", schema('{"type":"string","pattern":"^(a)\\\\1$"}', "back-reference"))
    probe(
        "unclear messages", "property name with a quote", schema('{"properties":{"a\\"b":{"type":"string"}}}', "quote")
    )
    probe("unclear messages", "maxLength 10000", schema('{"type":"string","maxLength":10000}', "/maxLength"))
    bad = work / "bad.gbnf"
    bad.write_text("root ::= (unclosed\n")

    def no_dump():
        done = run("ask", "-m", model, "--grammar", bad, "hi")
        return clean(done, 1, "could not parse") or ("dumped" if b"root ::=" in done.stderr else "")

    probe("unclear messages", "llama.cpp grammar dump", no_dump)
    other = work / "other.mkv"
    write_timed_clip(other, [i / 4 for i in range(8)])
    probe(
        "unclear messages",
        "--video twice",
        lambda: clean(run("ask", "-m", model, "--video", clip, "--video", other, "hi"), 1, "2 times"),
    )
    video_fifo = work / "clip.fifo"
    os.mkfifo(video_fifo)
    probe(
        "unclear messages",
        "--video a FIFO nobody writes",
        lambda: clean(run("ask", "-m", model, "--video", video_fifo, "hi"), 1, "named pipe"),
    )
    sparse = work / "sparse.mkv"
    write_timed_clip(sparse, [0, 1, 277 * 3600])
    probe(
        "unclear messages",
        "sparse clip",
        lambda: clean(run("ask", "-m", model, "--video", sparse, "hi"), 1, "timestamps"),
    )

    serve_probes(probe, work, model)


def serve_probes(probe, work: Path, model: Path) -> None:
    """`smolcli serve` on loopback: odd values are a 400 or 413 naming the thing, and the same process goes on."""
    import http.client
    import json
    import re

    allowed = work / "allowed"
    allowed.mkdir()
    log = work / "serve.log"
    server = subprocess.Popen(
        [*CLI, "serve", "-m", str(model), "--port", "0", "--allow-files", str(allowed)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline and server.poll() is None:
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
            port = int(found.group(1)) if found else None
            time.sleep(0.1)
        while port is not None and time.monotonic() < deadline:  # until the model is loaded
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/health")
            ready = connection.getresponse()
            ready.read()
            connection.close()
            if ready.status == 200:
                break
            time.sleep(0.1)
        if port is None:
            probe("serve", "server started", f"no port: {log.read_text()[-300:]}")
            return

        def post(body: dict) -> tuple[int, dict]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            status, raw = response.status, response.read()
            connection.close()
            return status, json.loads(raw)

        def answered() -> str:
            status, _ = post({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
            return "" if status == 200 and server.poll() is None else f"then {status}, alive={server.poll() is None}"

        def expect(body: dict, wanted: int, word: str):
            def check():
                status, reply = post(body)
                message = reply.get("error", {}).get("message", "")
                if status != wanted or word not in message or "\n" in message:
                    return f"{status}: {message[:200]}"
                return answered()

            return check

        def image(url: str) -> dict:
            return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}

        def schema_body(schema: dict) -> dict:
            format_ = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
            return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "response_format": format_}

        probe(
            "serve",
            "response_format maxLength 100000",
            expect(schema_body({"type": "string", "maxLength": 100000}), 400, "/maxLength"),
        )
        probe("serve", "response_format empty enum", expect(schema_body({"enum": []}), 400, "/enum"))
        import base64

        for side in (14_000, 20_000, 100_000):
            png = png_claiming(work / f"huge-{side}.png", side, side)
            uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
            probe("serve", f"{side}x{side} PNG header", expect(image(uri), 413, "pixels"))
        (allowed / "loop-a").symlink_to(allowed / "loop-b")
        (allowed / "loop-b").symlink_to(allowed / "loop-a")
        probe("serve", "file:// with a NUL", expect(image((allowed / "a").as_uri() + "%00b.png"), 400, "NUL"))
        probe("serve", "file:// symlink loop", expect(image((allowed / "loop-a").as_uri()), 400, "loop"))
        probe("serve", "file:// name too long", expect(image(f"file://{allowed}/{'n' * 300}.png"), 400, "too long"))
        probe("serve", "URL with a space", expect(image("http://example.com/a b.png"), 400, "spaces"))
        probe("serve", "URL with CRLF", expect(image("http://example.com/a\r\nX: 1"), 400, "control"))
        probe("serve", "no traceback in the log", lambda: "traceback" if "Traceback" in log.read_text() else "")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
