"""A second question about the same image in a new process: its time against the first question's, with the
prefix cache (the prompt's shared prefix restored from disk) and without it (the tiles' embeddings from the
embedding cache, the whole prompt prefilled again).

    python benchmarks/prefix_cache.py --threads 2 --repeats 3

`smolcli bench`'s files: SmolVLM-256M real shapes with random weights, Q4_K_M model + Q8_0 mmproj, the 1024x768
photo-like image (13 tiles). Each ask is a fresh `smolcli ask --json` process, one answer token. Per repeat,
with the ONNX encoder built beforehand (once, outside the timings) and the embedding and prefix caches emptied:
  first     the first question (encodes the tiles, prefills the prompt, stores both caches)
  second    another question about the image (restores the prefix, prefills its own tokens)
  embedded  that question again with the prefix cache off (SMOLCLI_PREFIX_CACHE_MAX_BYTES=0): its tiles from
            the embedding cache, the whole prompt prefilled again (as before the prefix cache, but in the
            same two parts: the prefix, then the question's own tokens)
The second's and embedded's greedy token and top-5 logprobs are compared (the same bits are expected).
Prints each run and the medians' ratios as JSON; ratios are within one run of the script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from smolcli.bench.files import prepare_files
from smolcli.runtime.llama.prefix_cache import MAX_BYTES_ENV
from smolcli.util.user_cache import HOME_ENV

FIRST = "What is in this image?"
SECOND = "Which colours stand out in it?"


def ask(files, question: str, home, threads: int, *extra: str, env_extra: dict | None = None) -> dict:
    """One fresh `smolcli ask --json` process: its wall time seen from here and its report."""
    command = [sys.executable, "-m", "smolcli", "ask", "-m", str(files.model), "--mmproj", str(files.mmproj)]
    command += ["-i", str(files.image), "-t", str(threads), "-n", "1", "--ignore-eos", "--json", *extra, question]
    env = {**os.environ, HOME_ENV: str(home), **(env_extra or {})}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"ask failed: {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout)
    timings, usage = report["timings"], report["usage"]
    return {
        "wall_s": round(wall, 3),
        "load_s": timings["load_s"],
        "image_encode_s": timings["image_encode_s"],
        "prefill_s": timings["prefill_s"],
        "images_encoded": usage["images_encoded"],
        "image_cache_hits": usage["image_cache_hits"],
        "prompt_tokens": usage["prompt_tokens"],
        "answer": report.get("logprobs"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    files, _ = prepare_files("256m", "Q4_K_M", "Q8_0", args.threads, lambda line: print(line, file=sys.stderr))
    home = files.folder / "runs" / "prefix-cache"  # the ONNX encoder built there once and kept
    home.mkdir(parents=True, exist_ok=True)
    ask(files, FIRST, home, args.threads, "--no-cache")  # builds the ONNX encoder, stores no embedding or prefix
    runs: dict[str, list[dict]] = {"first": [], "second": [], "embedded": []}
    for repeat in range(args.repeats):
        for folder in ("embeddings", "prefixes"):
            shutil.rmtree(home / folder, ignore_errors=True)
        runs["first"].append(ask(files, FIRST, home, args.threads, "--logprobs", "5"))
        runs["second"].append(ask(files, SECOND, home, args.threads, "--logprobs", "5"))
        no_prefix = {MAX_BYTES_ENV: "0"}
        runs["embedded"].append(ask(files, SECOND, home, args.threads, "--logprobs", "5", env_extra=no_prefix))
        for name, done in runs.items():
            shown = {key: value for key, value in done[-1].items() if key != "answer"}
            print(f"repeat {repeat + 1} {name}: {shown}", file=sys.stderr)
        assert runs["second"][-1]["images_encoded"] == 0 and runs["second"][-1]["image_cache_hits"] == 0, (
            "the second question did not restore the prefix"
        )
    same = all(s["answer"] == e["answer"] for s, e in zip(runs["second"], runs["embedded"], strict=True))
    median = {name: statistics.median(run["wall_s"] for run in done) for name, done in runs.items()}
    print(
        json.dumps(
            {
                "model": files.model.name,
                "mmproj": files.mmproj.name,
                "threads": args.threads,
                "repeats": args.repeats,
                "prompt_tokens": runs["first"][0]["prompt_tokens"],
                "median_wall_s": {name: round(value, 3) for name, value in median.items()},
                "runs": {
                    name: [{k: v for k, v in run.items() if k != "answer"} for run in done]
                    for name, done in runs.items()
                },
                "second_over_first": round(median["second"] / median["first"], 3),
                "embedded_over_first": round(median["embedded"] / median["first"], 3),
                "second_equals_embedded_bit_for_bit": same,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
