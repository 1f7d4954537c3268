"""Hostile-but-fair probes of every class in issue 15, run against the real CLI; prints counts by class.

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
    bomb = pictures / "bomb.png"
    Image.new("L", (8, 8)).save(bomb)
    data = bytearray(bomb.read_bytes())
    import struct
    import zlib

    data[16:24] = struct.pack(">II", 30000, 30000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    bomb.write_bytes(bytes(data))
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

    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)

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


if __name__ == "__main__":
    sys.exit(main())
