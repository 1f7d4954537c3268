"""What serve's kept conversations cost: four conversations held idle (a context each, as serve kept them before
Chat.park()) against four parked (their saved states), and what a follow-up takes in each case.

    python benchmarks/kept_conversations.py --shape 256m --tokens 300 1500 --runs 3
    python benchmarks/kept_conversations.py --shape 2.2b --tokens 300 --together --threads 1

Each (mode, length) runs in a process of its own, modes interleaved: the model (real shapes, random weights:
`smolcli bench`'s files) is loaded and warmed, then four Chats each get a text prompt of about --tokens tokens and
a short answer, and are kept (idle) or parked; the RSS growth over the warmed model is what the four hold. Then each
conversation's follow-up (a short question, 8 tokens answered) is timed: an idle one evaluates its message in the
context it kept, a parked one restores its state into a new context first. Medians over --runs. --together: one
process per length, both modes in it (both_in_one), with CPU seconds beside wall time; JSON lines.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

SENTENCE = "The harbour was busy this morning, with fishing boats, ferries and a few sailing yachts. "
KEPT = 4


def rss() -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def conversations(model, tokens: int, park: bool) -> tuple[int, list]:
    """The RSS after a warm-up (a first chat, parked and restored, closed), and KEPT chats of about `tokens` tokens
    each, kept idle or parked."""
    prompt = model.engine.tokenize(SENTENCE, [])
    per_sentence = prompt.n_tokens  # the random checkpoints' vocabularies cut words finely
    prompt.free()
    text = SENTENCE * max(1, round(tokens / per_sentence))
    warm = model.chat(max_tokens=2)
    warm.send(text)
    warm.park()
    warm.send("And?")
    warm.close()
    before = rss()
    chats = []
    for i in range(KEPT):
        chat = model.chat(max_tokens=8, ignore_eos=True)
        chat.send(f"{i}. {text}")
        if park:
            chat.park()
        chats.append(chat)
    return before, chats


def one_run(model_path: str, tokens: int, mode: str, threads: int) -> dict:
    import smolcli

    with smolcli.load(model_path, threads=threads) as model:
        before, chats = conversations(model, tokens, park=mode == "parked")
        held = rss() - before
        follow_ups = []
        for chat in chats:
            started = time.perf_counter()
            chat.send("What did I describe?")
            follow_ups.append(time.perf_counter() - started)
        return {
            "mode": mode,
            "tokens": chats[0].n_past,
            "n_ctx": chats[0].n_ctx,
            "held_bytes": held,
            "follow_up_s": statistics.median(follow_ups),
        }


def both_in_one(model_path: str, tokens: int, threads: int) -> dict:
    """The quicker form for large shapes (--together): one process, four conversations measured idle, then parked;
    each then answers a follow-up from its parked state and a second one from the context that restored it (idle),
    alternating, so the two latencies share the machine's load."""
    import smolcli

    with smolcli.load(model_path, threads=threads) as model:
        before, chats = conversations(model, tokens, park=False)
        idle = rss() - before
        for chat in chats:
            chat.park()
        parked = rss() - before
        restored, stayed = [], []  # (wall, CPU) seconds: a shared machine's load stretches the first, not the second
        for chat in chats:
            started, cpu = time.perf_counter(), time.process_time()
            chat.send("What did I describe?")
            restored.append((time.perf_counter() - started, time.process_time() - cpu))
            started, cpu = time.perf_counter(), time.process_time()
            chat.send("And then?")
            stayed.append((time.perf_counter() - started, time.process_time() - cpu))
        return {
            "tokens": chats[0].n_past,
            "n_ctx": chats[0].n_ctx,
            "idle_bytes": idle,
            "parked_bytes": parked,
            "state_bytes": [chat.state_bytes for chat in chats],
            "follow_up_parked_s": statistics.median(wall for wall, _ in restored),
            "follow_up_idle_s": statistics.median(wall for wall, _ in stayed),
            "follow_up_parked_cpu_s": statistics.median(cpu for _, cpu in restored),
            "follow_up_idle_cpu_s": statistics.median(cpu for _, cpu in stayed),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="256m", choices=["256m", "2.2b"])
    parser.add_argument("--tokens", type=int, nargs="+", default=[300, 1500])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--together", action="store_true", help="one process per length (both_in_one)")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "TOKENS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, tokens, mode = args.one
        print(json.dumps(one_run(model, int(tokens), mode, args.threads)))
        return

    from smolcli.bench.files import prepare_files

    model = str(prepare_files(args.shape, "Q4_K_M", "Q8_0")[0].model)
    if args.together:
        for tokens in args.tokens:
            print(json.dumps(both_in_one(model, tokens, args.threads)), flush=True)
        return
    results: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.runs):
        for tokens in args.tokens:
            for mode in ("idle", "parked"):
                command = [sys.executable, __file__, "--threads", str(args.threads), "--one", model, str(tokens), mode]
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                results.setdefault((tokens, mode), []).append(json.loads(out.strip().splitlines()[-1]))
    print(f"{args.shape} Q4_K_M, {KEPT} conversations kept, {args.threads} threads, medians of {args.runs} runs")
    print(f"{'prompt':>7} {'mode':7} {'tokens':>6} {'n_ctx':>6} {'held (4)':>10} {'each':>9} {'follow-up':>10}")
    for (tokens, mode), runs in results.items():
        held = statistics.median(r["held_bytes"] for r in runs)
        follow = statistics.median(r["follow_up_s"] for r in runs)
        print(
            f"{tokens:>7} {mode:7} {runs[0]['tokens']:>6} {runs[0]['n_ctx']:>6} {held / 2**20:>8.1f}Mi"
            f" {held / KEPT / 2**20:>7.1f}Mi {follow * 1000:>8.0f}ms"
        )


if __name__ == "__main__":
    main()
