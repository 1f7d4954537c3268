"""Time `smolcli ask` on one image with an empty, then a filled image-embedding cache.

    python benchmarks/embedding_cache.py --threads 2

A real-shaped random SmolVLM-256M (Q4_K_M model, Q8_0 mmproj) and a 1024x768 photo-like image.
Each ask is a fresh process, as a user's would be; the cache lives in a temporary SMOLCLI_HOME.
Runs: cold (empty cache: encodes, stores, hashes the mmproj once), warm (every tile from the
cache), and --no-cache (encodes, touches no cache) for the encoder's cost without the cache's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smolcli.synthetic.images import photo_like

QUESTION = "What is in this image?"


def converted_pair(workdir: Path) -> tuple[Path, Path]:
    from smolcli.convert import convert_checkpoint
    from smolcli.synthetic.random_checkpoint import write_random_checkpoint

    out = workdir / "gguf-256m"
    models = sorted(out.glob("*-Q4_K_M.gguf"))
    mmprojs = sorted(out.glob("mmproj-*-Q8_0.gguf"))
    if models and mmprojs:
        return models[0], mmprojs[0]
    source = workdir / "random-256m"
    if not (source / "config.json").exists():
        write_random_checkpoint(source, "256m")
    result = convert_checkpoint(source, out, "Q4_K_M", "Q8_0", name="bench-256m")
    return result.model, result.mmproj


def timed_ask(model: Path, mmproj: Path, image: Path, home: Path, threads: int, max_tokens: int, *extra: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "smolcli",
        "ask",
        "-m",
        str(model),
        "--mmproj",
        str(mmproj),
        "-i",
        str(image),
        "-t",
        str(threads),
        "-n",
        str(max_tokens),
        "--ignore-eos",
        "--json",
        *extra,
        QUESTION,
    ]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "SMOLCLI_HOME": str(home)})
    wall = time.perf_counter() - started
    if run.returncode != 0:
        sys.exit(f"ask failed: {run.stderr.strip()}")
    report = json.loads(run.stdout)
    return {
        "wall_s": round(wall, 3),
        "image_encode_s": report["timings"]["image_encode_s"],
        "images_encoded": report["usage"]["images_encoded"],
        "image_cache_hits": report["usage"]["image_cache_hits"],
        "text": report["text"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "smolcli" / "bench")
    args = parser.parse_args()

    model, mmproj = converted_pair(args.workdir)
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "photo.jpg"
        photo_like(1024, 768).save(image, quality=90)
        home = Path(scratch) / "home"
        runs = {}
        for name, extra in (("cold", ()), ("warm", ()), ("no_cache", ("--no-cache",))):
            runs[name] = timed_ask(model, mmproj, image, home, args.threads, args.max_tokens, *extra)
            print(name, {k: v for k, v in runs[name].items() if k != "text"}, file=sys.stderr)
    cold, warm = runs["cold"], runs["warm"]
    assert warm["text"] == cold["text"], "the warm answer differs from the cold one"
    print(
        json.dumps(
            {
                "model": model.name,
                "mmproj": mmproj.name,
                "threads": args.threads,
                **{name: {k: v for k, v in run.items() if k != "text"} for name, run in runs.items()},
                "warm_over_cold_wall": round(warm["wall_s"] / cold["wall_s"], 3),
                "warm_over_cold_image_encode": round(warm["image_encode_s"] / cold["image_encode_s"], 4),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
