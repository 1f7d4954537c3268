"""Where a `serve --parallel` decode step's time goes, and the ceiling llama.cpp's kernels set for it.

    python benchmarks/batch_step.py --threads 2                  # both parts, the 256M-shaped pairs
    python benchmarks/batch_step.py --part raw --types Q4_K_M    # only the raw step times

raw: bare llama.cpp steps of the text model, no smolcli code between them: a one-token llama_decode against
one four-token llama_decode (four sequences of one context), per weight type the sweep knows (Q4_K_M the
default, Q4_0 with llama.cpp's CPU repacking, Q8_0, BF16) and per thread count, blocks of --steps steps
alternating between the two, medians. The ceiling of N clients' throughput over one client's is
N x (one-row step) / (N-row step): what the server could reach if our own work between steps cost nothing.

split: the library's path, as the server's worker drives it (Model.batch_decoder, Chat.send(decoder=...),
one next() per stream then one BatchDecoder.step() per round): --sequences chats of --decode-tokens tokens
each, the end of answer ignored; each round's wall time split into llama_decode itself, building its batch,
choosing the tokens (logits and sampling), detokenizing, and the rest of our Python (the generators, the
answer text, the decoder's bookkeeping). Then the same chats one at a time (each alone, in its own context):
the library's own N-over-one ratio, without HTTP.

Prints one JSON object. The machine may be shared: compare only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

from serve_load import cpu_name

from smolcli.bench.files import prepare_files

TYPES = ("Q4_K_M", "Q4_0", "Q8_0", "BF16")
REPACKED = {"Q4_0"}  # the type whose CPU repacking pays on this sweep's CPU (benchmarks/weight_repack.py)
QUESTIONS = ("Describe a lighthouse.", "What is a river?", "Name three colours.", "Count to ten.")


def raw_steps(model_path, threads: int, repack: bool, n: int, steps: int, blocks: int) -> dict:
    """Median seconds of a one-token and of an n-token llama_decode, blocks alternating."""
    from smolcli.runtime.gguf.model_files import resolve_model_files
    from smolcli.runtime.llama.engine import Engine, EngineOptions

    files = resolve_model_files(str(model_path), need_mmproj=False)
    files = type(files)(files.model, None)
    with Engine(files, EngineOptions(threads=threads, repack_weights=repack)) as engine:
        one = engine.new_context(512)
        many = engine.new_context(512 * n, n_seq=n, n_batch=n)
        position = {"one": 0, "many": 0}

        def block(context, name: str, rows: int) -> list[float]:
            times = []
            for _ in range(steps):
                if position[name] >= 480:
                    context.clear()
                    position[name] = 0
                entries = [(100 + row, position[name], row) for row in range(rows)]
                started = time.perf_counter()
                context.decode_step(entries)
                times.append(time.perf_counter() - started)
                position[name] += 1
            return times

        block(one, "one", 1)  # warm: the first steps allocate
        block(many, "many", n)
        single, batched = [], []
        for _ in range(blocks):
            single += block(one, "one", 1)
            batched += block(many, "many", n)
        one.free()
        many.free()
    one_s, many_s = statistics.median(single), statistics.median(batched)
    return {
        "one_row_ms": round(one_s * 1e3, 2),
        f"{n}_rows_ms": round(many_s * 1e3, 2),
        f"{n}_rows_over_one": round(many_s / one_s, 2),
        "ceiling": round(n * one_s / many_s, 2),
    }


class Timers:
    """Seconds per named part, summed, from wrapped callables."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, owner, name: str, part: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - started
                self.calls[part] += 1

        setattr(owner, name, timed)

    @contextmanager
    def part(self, part: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - started


def split(model_path, mmproj_path, threads: int, n: int, tokens: int) -> dict:
    """One library run of n chats decoded together, its rounds' time by part; then the same chats one at a time."""
    import llama_cpp

    import smolcli
    from smolcli.runtime.decoding import sampling
    from smolcli.runtime.llama import engine as engine_module

    timers = Timers()
    report: dict = {}
    with smolcli.load(str(model_path), mmproj=str(mmproj_path), threads=threads) as model:
        settings = {"max_tokens": tokens, "temperature": 0, "ignore_eos": True}
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]

        def alone() -> tuple[float, list[str]]:
            chats = [model.chat(**settings) for _ in questions]
            decode = 0.0
            texts = []
            for chat, question in zip(chats, questions, strict=True):
                before = model.engine.counters.decode_seconds
                texts.append(chat.send(question).text)
                decode += model.engine.counters.decode_seconds - before
                chat.close()
            return n * tokens / decode, texts

        alone()  # warm
        one_rate, alone_texts = alone()

        # llama_decode itself, inside the batch decoder's step (the C call, building the batch around it apart)
        decoder = model.batch_decoder(n)
        timers.wrap(llama_cpp, "llama_decode", "llama_decode")
        timers.wrap(sampling.Sampler, "sample", "sampling (logits to token)")
        timers.wrap(engine_module.Engine, "piece", "detokenizing")
        timers.wrap(type(decoder.shared), "decode_step", "decode_step (batch + llama_decode)")
        chats = [model.chat(**settings) for _ in questions]
        streams = [chat.send(q, stream=True, decoder=decoder) for chat, q in zip(chats, questions, strict=True)]
        live = {index: iter(stream) for index, stream in enumerate(streams)}
        texts = [""] * n
        # the prompts are evaluated on each stream's first next(): not part of the decode rounds
        for index, pieces in live.items():
            texts[index] += next(pieces)
        for key in list(timers.seconds):
            timers.seconds[key] = 0.0
            timers.calls[key] = 0
        rounds = 0
        started = time.perf_counter()
        while live:
            with timers.part("step()"):
                decoder.step()
            for index, pieces in list(live.items()):
                piece = next(pieces, None)  # None: that answer has ended
                if piece is None:
                    del live[index]
                else:
                    texts[index] += piece
            rounds += 1
        wall = time.perf_counter() - started
        for chat in chats:
            chat.close()
        seconds = dict(timers.seconds)
        decode_c = seconds["llama_decode"]
        batch = seconds["decode_step (batch + llama_decode)"] - decode_c
        step_rest = seconds["step()"] - seconds["decode_step (batch + llama_decode)"]
        sample = seconds["sampling (logits to token)"]
        pieces = seconds["detokenizing"]
        rest = wall - seconds["step()"] - sample - pieces
        parts = {
            "llama_decode": decode_c,
            "building the batch": batch,
            "the decoder's bookkeeping": step_rest,
            "sampling (logits to token)": sample,
            "detokenizing": pieces,
            "generators, answer text, rest": rest,
        }
        together_rate = n * tokens / wall
        report = {
            "rounds": rounds,
            "ms_per_round": round(wall / rounds * 1e3, 2),
            "split_ms_per_round": {k: round(v / rounds * 1e3, 3) for k, v in parts.items()},
            "split_share": {k: round(v / wall, 3) for k, v in parts.items()},
            "one_at_a_time_decode_tok_s": round(one_rate, 1),
            "together_tok_s": round(together_rate, 1),
            "together_over_one_at_a_time": round(together_rate / one_rate, 2),
            "same_answers": texts == alone_texts,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("raw", "split", "both"), default="both")
    parser.add_argument("--shape", default="256m")
    parser.add_argument("--types", default=",".join(TYPES), help="raw: the weight types, comma-separated")
    parser.add_argument("--threads", default="1,2", help="raw: thread counts, comma-separated; split: the last")
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16, help="raw: steps per block")
    parser.add_argument("--blocks", type=int, default=5, help="raw: blocks of each kind, alternating")
    parser.add_argument("--decode-tokens", type=int, default=64, help="split: tokens per answer")
    args = parser.parse_args()

    thread_counts = [int(t) for t in args.threads.split(",")]
    report: dict = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average": os.getloadavg()[0], "shape": args.shape}
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    if args.part in ("raw", "both"):
        raw = {}
        for quant in args.types.split(","):
            files, _ = prepare_files(args.shape, quant, "Q8_0", report=say)
            for threads in thread_counts:
                name = f"{quant}{' repacked' if quant in REPACKED else ''}, {threads} thread{'s' * (threads > 1)}"
                raw[name] = raw_steps(files.model, threads, quant in REPACKED, args.sequences, args.steps, args.blocks)
                say(f"{name}: {raw[name]}")
        report["raw"] = raw
    if args.part in ("split", "both"):
        files, _ = prepare_files(args.shape, "Q4_K_M", "Q8_0", report=say)
        report["split"] = split(files.model, files.mmproj, thread_counts[-1], args.sequences, args.decode_tokens)
    report["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
