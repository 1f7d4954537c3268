"""Load test of `smolcli serve` on loopback, against the same work through `smolcli ask` processes.

    python benchmarks/serve_load.py --threads 2                 # the 256M-shaped random pair
    python benchmarks/serve_load.py --shape tiny --threads 2    # seconds, for a quick look
    python benchmarks/serve_load.py --peer                      # + llama-cpp-python's own server

1. --clients (16) concurrent clients x --requests (5) single questions, each client with an image of
   its own (so each image is encoded once, then comes from the embedding cache), a queue that holds
   them all: every request must be answered (200).
2. --burst (32) concurrent clients x 1 question against a server with a queue of --small-queue (4):
   every request must be answered or refused with 503 + Retry-After; none may hang or be lost.
3. The first --ask-clients (2) clients' requests through `smolcli ask` processes, one after another
   (what a shell loop does): the same questions, images and embedding cache.
4. With --peer: `python -m llama_cpp.server` (pip install fastapi sse-starlette starlette-context
   pydantic-settings) with its mtmd chat handler on the same pair, if it loads it: a three-turn
   conversation about one image, and --clients concurrent single questions, timed against ours.

Answers are --max-tokens (16) tokens, the end of answer ignored, so both sides generate the same.
Every side reads images at --detail (1024) px, the longest side: smolcli's --image-size, and for the
peer the mmproj variant smolcli makes for that size (the model's own 2048 makes 13 tiles of a 4:3
image, minutes per cold image on two cores).
Prints one JSON object; every request is bounded by --timeout seconds on the client side.

    python benchmarks/serve_load.py --parallel 4 --threads 2   # only this: serve --parallel's decode throughput

--parallel N runs only this phase: one server with --parallel N, text questions of --decode-tokens (64) tokens
each (the end of answer ignored, so every answer has them all), --rounds (3) times in turn: one client alone,
then N clients at once; decode throughput is their completion tokens over the wall time, and the N clients'
total over the one client's is the figure (medians of the rounds). The N answers given together must equal
the same questions asked one at a time (greedy). The same N clients against a --parallel 1 server (today's
one at a time) are timed beside (not with --skip-parallel-1).

    git archive <commit> smolcli | tar -x -C /tmp/base     # another commit's package, to compare against
    python benchmarks/serve_load.py --parallel 4 --baseline /tmp/base --skip-parallel-1

--baseline ROOT: a second --parallel N server runs ROOT's smolcli package (PYTHONPATH, ahead of this checkout's),
up beside this one's, and their rounds alternate (one client then N on one, then on the other), so both see the
same load; its figures are reported under "baseline".
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from smolcli.bench.files import prepare_files
from smolcli.synthetic.images import photo_like

QUESTION = "Describe this image."
FOLLOW_UPS = ("What colours are in it?", "Anything else?")


def cpu_name() -> str:
    try:
        found = re.search(r"Model name:\s*(.+)", subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
        return found.group(1).strip() if found else platform.processor()
    except OSError:
        return platform.processor()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def client_images(n: int, size: int, first_seed: int = 1) -> list[bytes]:
    images = []
    for seed in range(first_seed, first_seed + n):
        buffer = io.BytesIO()
        photo_like(size, size * 3 // 4, seed).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def question(image: bytes) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_uri(image)}},
                {"type": "text", "text": QUESTION},
            ],
        }
    ]


# --- servers ----------------------------------------------------------------------------------


class Server:
    def __init__(
        self, command: list[str], home: Path, log: Path, port_pattern: str, ready_path: str, port=None, source=None
    ):
        self.log = log
        env = os.environ | {"SMOLCLI_HOME": str(home)}
        if source is not None:  # another checkout's smolcli package, ahead of this one's editable install
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(source), env.get("PYTHONPATH"))))
        self.process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 600
        self.port = port
        while self.port is None:
            found = re.search(port_pattern, log.read_text())
            if found:
                self.port = int(found.group(1))
            elif self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-2000:]}")
            else:
                time.sleep(0.1)
        import urllib.request

        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{ready_path}", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)

    def client(self, timeout: float) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1", api_key="none", max_retries=0, timeout=timeout
        )

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return round(int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024, 1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return -9


def smolcli_server(
    model: Path, home: Path, log: Path, threads: int, queue: int, detail: int, parallel: int = 1, source=None
) -> Server:
    command = [sys.executable, "-m", "smolcli", "serve", "-m", str(model), "--port", "0", "--threads", str(threads)]
    command += ["--queue", str(queue), "--image-size", str(detail), "--parallel", str(parallel)]
    return Server(command, home, log, r"listening on http://127\.0\.0\.1:(\d+)", "/health", source=source)


def mmproj_at_detail(model: Path, detail: int, image: bytes) -> Path:
    """The mmproj variant smolcli reads images with at this detail: the peer gets the same tiles."""
    from smolcli.api.model import Model
    from smolcli.api.options import LoadOptions
    from smolcli.runtime.vision.images import image_from

    return Model.open(model, LoadOptions(image_size=detail)).vision_for([image_from(image)]).path


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def peer_server(model: Path, mmproj: Path, home: Path, log: Path, threads: int) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--clip_model_path", str(mmproj)]
    command += ["--chat_format", "mtmd", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"]
    command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    return Server(command, home, log, r"^$", "/v1/models", port=port)


# --- load -------------------------------------------------------------------------------------


def one_request(client: openai.OpenAI, messages: list[dict], max_tokens: int) -> dict:
    started = time.perf_counter()
    try:
        answer = client.chat.completions.create(
            model="m", messages=messages, max_tokens=max_tokens, extra_body={"ignore_eos": True}
        )
        return {"status": 200, "seconds": time.perf_counter() - started, "tokens": answer.usage.completion_tokens}
    except openai.APIStatusError as error:
        retry = error.response.headers.get("retry-after")
        return {"status": error.status_code, "seconds": time.perf_counter() - started, "retry_after": retry}
    except openai.APIConnectionError as error:  # a timeout included: a request that hung
        return {"status": "no answer", "seconds": time.perf_counter() - started, "error": type(error).__name__}


def latency_figures(results: list[dict], wall: float) -> dict:
    answered = sorted(r["seconds"] for r in results if r["status"] == 200)
    statuses: dict[str, int] = {}
    for result in results:
        statuses[str(result["status"])] = statuses.get(str(result["status"]), 0) + 1
    figures = {"requests": len(results), "statuses": statuses, "wall_s": round(wall, 2)}
    if answered:
        figures |= {
            "requests_per_s": round(len(answered) / wall, 3),
            "p50_s": round(statistics.median(answered), 3),
            "p95_s": round(answered[min(len(answered) - 1, int(0.95 * len(answered)))], 3),
        }
    return figures


def load(server: Server, images: list[bytes], per_client: int, max_tokens: int, timeout: float) -> dict:
    client = server.client(timeout)

    def run_client(index: int) -> list[dict]:
        return [one_request(client, question(images[index]), max_tokens) for _ in range(per_client)]

    started = time.perf_counter()
    with ThreadPoolExecutor(len(images)) as pool:
        results = [r for client_results in pool.map(run_client, range(len(images))) for r in client_results]
    return latency_figures(results, time.perf_counter() - started) | {"server_peak_rss_mb": server.peak_rss_mb()}


def asks(model: Path, home: Path, images: list[bytes], per_client: int, max_tokens: int, threads: int, detail: int):
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for index, image in enumerate(images):
            path = Path(scratch) / f"client-{index}.png"
            path.write_bytes(image)
            for _ in range(per_client):
                command = [sys.executable, "-m", "smolcli", "ask", "-m", str(model), "-i", str(path)]
                command += [
                    "-n",
                    str(max_tokens),
                    "--ignore-eos",
                    "--threads",
                    str(threads),
                    "--image-size",
                    str(detail),
                ]
                command.append(QUESTION)
                began = time.perf_counter()
                done = subprocess.run(command, capture_output=True, env=os.environ | {"SMOLCLI_HOME": str(home)})
                results.append(
                    {"status": 200 if done.returncode == 0 else done.returncode, "seconds": time.perf_counter() - began}
                )
    return latency_figures(results, time.perf_counter() - started)


def conversation(server: Server, image: bytes, max_tokens: int, timeout: float) -> dict:
    """Three turns about one image, each request carrying the whole conversation: seconds per turn."""
    client = server.client(timeout)
    messages = question(image)
    turns, prompts = [], []
    for follow_up in (None, *FOLLOW_UPS):
        if follow_up is not None:
            # content as parts: SmolVLM's own chat template (the peer renders it) indexes into them
            messages.append({"role": "user", "content": [{"type": "text", "text": follow_up}]})
        started = time.perf_counter()
        answer = client.chat.completions.create(
            model="m", messages=messages, max_tokens=max_tokens, extra_body={"ignore_eos": True}
        )
        turns.append(round(time.perf_counter() - started, 3))
        prompts.append(answer.usage.prompt_tokens)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer.choices[0].message.content}]})
    return {"turn_s": turns, "total_s": round(sum(turns), 3), "prompt_tokens": prompts}


PARALLEL_QUESTIONS = (
    "Tell me a long story about a lighthouse.",
    "Explain how bread rises.",
    "List the planets and one fact about each.",
    "Describe a walk through a forest in autumn.",
    "What makes a good cup of tea?",
    "Write a letter to a friend about the sea.",
    "How does a bicycle stay upright?",
    "Describe the city at night.",
)


def decode_round(client: openai.OpenAI, questions: list[str], max_tokens: int) -> tuple[float, list[str], float]:
    """The questions at once, one client each: (completion tokens per second of wall time, the answers, wall)."""

    def one(text: str):
        answer = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": text}],
            max_tokens=max_tokens,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        return answer.usage.completion_tokens, answer.choices[0].message.content

    started = time.perf_counter()
    with ThreadPoolExecutor(len(questions)) as pool:
        done = list(pool.map(one, questions))
    wall = time.perf_counter() - started
    return sum(tokens for tokens, _ in done) / wall, [text for _, text in done], wall


def parallel_decode(files, scratch: Path, args) -> dict:
    n = args.parallel
    questions = [PARALLEL_QUESTIONS[i % len(PARALLEL_QUESTIONS)] for i in range(n)]
    report: dict = {"parallel": n, "decode_tokens": args.decode_tokens, "rounds": args.rounds}
    # this checkout's server, and with --baseline another checkout's beside it: both up, their rounds interleaved
    sides = {"this": None} | ({"baseline": Path(args.baseline).resolve()} if args.baseline else {})
    servers: dict[str, Server] = {}
    try:
        for name, source in sides.items():
            servers[name] = smolcli_server(
                files.model,
                scratch / f"home-par-{name}",
                scratch / f"par-{name}.log",
                args.threads,
                queue=2 * n,
                detail=args.detail,
                parallel=n,
                source=source,
            )
        clients = {name: server.client(args.timeout) for name, server in servers.items()}
        alone = {}
        for name, client in clients.items():
            decode_round(client, questions[:1], 4)  # warm: the first request's setup is not decoding
            alone[name] = [decode_round(client, [question], args.decode_tokens)[1][0] for question in questions]
        one_client = {name: [] for name in servers}
        n_clients = {name: [] for name in servers}
        same = {name: True for name in servers}
        for _ in range(args.rounds):
            for name, client in clients.items():
                one_client[name].append(decode_round(client, questions[:1], args.decode_tokens)[0])
                rate, together, _ = decode_round(client, questions, args.decode_tokens)
                n_clients[name].append(rate)
                same[name] = same[name] and together == alone[name]
        for name, server in servers.items():
            side = report if name == "this" else report.setdefault(name, {"source": str(sides[name])})
            side["same_answers_as_one_at_a_time"] = same[name]
            side["one_client_tok_s"] = [round(r, 1) for r in one_client[name]]
            side[f"{n}_clients_tok_s"] = [round(r, 1) for r in n_clients[name]]
            side[f"{n}_clients_over_one"] = round(
                statistics.median(n_clients[name]) / statistics.median(one_client[name]), 2
            )
            side["server_peak_rss_mb"] = server.peak_rss_mb()
        if args.baseline:
            report["baseline"]["answers_equal_this"] = alone["baseline"] == alone["this"]
    finally:
        for name, server in servers.items():
            status = server.stop()
            if name == "this":
                report["exit_status"] = status
    if args.skip_parallel_1:
        return report
    one_client = one_client["this"]
    # today's server, one answer at a time, under the same N clients
    server = smolcli_server(
        files.model, scratch / "home-one", scratch / "one.log", args.threads, queue=2 * n, detail=args.detail
    )
    try:
        client = server.client(args.timeout)
        decode_round(client, questions[:1], 4)
        rates = [decode_round(client, questions, args.decode_tokens)[0] for _ in range(args.rounds)]
        report[f"parallel_1_{n}_clients_tok_s"] = [round(r, 1) for r in rates]
        report[f"parallel_1_{n}_clients_over_one"] = round(statistics.median(rates) / statistics.median(one_client), 2)
        report["parallel_1_peak_rss_mb"] = server.peak_rss_mb()
    finally:
        server.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="256m", help="the random pair's shape: 256m, or tiny for a quick run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=5, help="questions per client in the first phase")
    parser.add_argument("--burst", type=int, default=32)
    parser.add_argument("--small-queue", type=int, default=4)
    parser.add_argument("--ask-clients", type=int, default=2, help="clients whose questions go through smolcli ask")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=512, help="each client's image width (3:4)")
    parser.add_argument("--detail", type=int, default=1024, help="the longest side images are read at, every side")
    parser.add_argument("--timeout", type=float, default=600.0, help="the client's limit per request")
    parser.add_argument("--peer", action="store_true", help="also time llama-cpp-python's server")
    parser.add_argument("--parallel", type=int, default=0, help="only serve --parallel N's decode throughput")
    parser.add_argument("--decode-tokens", type=int, default=64, help="--parallel: tokens per answer")
    parser.add_argument("--rounds", type=int, default=3, help="--parallel: one client, then N, this many times")
    parser.add_argument(
        "--baseline", help="--parallel: another checkout's root (git worktree add), its server's rounds interleaved"
    )
    parser.add_argument("--skip-parallel-1", action="store_true", help="--parallel: not the --parallel 1 server")
    args = parser.parse_args()

    files, _ = prepare_files(args.shape, "Q4_K_M", "Q8_0", report=lambda line: print(line, file=sys.stderr))
    if args.parallel:
        report = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads, "shape": args.shape}
        with tempfile.TemporaryDirectory() as scratch:
            report["serve_parallel"] = parallel_decode(files, Path(scratch), args)
        print(json.dumps(report, indent=2))
        return
    images = client_images(args.clients, args.image_size)
    report: dict = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads, "shape": args.shape}
    report["settings"] = {k: v for k, v in vars(args).items() if k not in ("peer",)}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        print("phase 1: steady load", file=sys.stderr)
        server = smolcli_server(
            files.model, scratch / "home-load", scratch / "load.log", args.threads, queue=64, detail=args.detail
        )
        try:
            report["serve_load"] = load(server, images, args.requests, args.max_tokens, args.timeout)
            # images not seen yet, as the peer sees them: it has no embedding cache
            unseen = client_images(args.clients, args.image_size, first_seed=1000)
            report["serve_conversation"] = conversation(server, unseen[0], args.max_tokens, args.timeout)
            report["serve_single_questions"] = load(server, unseen[1:] + unseen[:1], 1, args.max_tokens, args.timeout)
        finally:
            report["serve_load"]["exit_status"] = server.stop()

        print("phase 2: burst against a small queue", file=sys.stderr)
        burst_images = client_images(args.burst, args.image_size)
        server = smolcli_server(
            files.model,
            scratch / "home-burst",
            scratch / "burst.log",
            args.threads,
            queue=args.small_queue,
            detail=args.detail,
        )
        try:
            report["serve_burst"] = load(server, burst_images, 1, args.max_tokens, args.timeout)
        finally:
            report["serve_burst"]["exit_status"] = server.stop()

        print("phase 3: the same questions through smolcli ask", file=sys.stderr)
        ask_images = images[: args.ask_clients]
        report["ask_processes"] = asks(
            files.model, scratch / "home-ask", ask_images, args.requests, args.max_tokens, args.threads, args.detail
        )
        report["serve_over_ask"] = {
            "requests_per_s": round(
                report["serve_load"]["requests_per_s"] / report["ask_processes"]["requests_per_s"], 2
            ),
            "p50": round(report["serve_load"]["p50_s"] / report["ask_processes"]["p50_s"], 2),
        }

        if args.peer:
            print("phase 4: llama-cpp-python's server", file=sys.stderr)
            report["peer"] = peer(files, scratch, client_images(args.clients, args.image_size, 2000), args)
            if report["peer"].get("load"):
                ours, theirs = report, report["peer"]
                report["peer_over_serve"] = {
                    "conversation_turn_s": [
                        round(t / o, 2)
                        for t, o in zip(
                            theirs["conversation"]["turn_s"], ours["serve_conversation"]["turn_s"], strict=True
                        )
                    ],
                    "conversation_total_s": round(
                        theirs["conversation"]["total_s"] / ours["serve_conversation"]["total_s"], 2
                    ),
                    "single_questions_wall_s": round(
                        theirs["load"]["wall_s"] / ours["serve_single_questions"]["wall_s"], 2
                    ),
                }
    print(json.dumps(report, indent=2))


def peer(files, scratch: Path, images: list[bytes], args) -> dict:
    try:
        mmproj = mmproj_at_detail(files.model, args.detail, images[0])
        server = peer_server(files.model, mmproj, scratch / "home-peer", scratch / "peer.log", args.threads)
    except RuntimeError as error:
        return {"loads_smolvlm": False, "error": str(error)[-600:]}
    try:
        try:
            result = {
                "loads_smolvlm": True,
                "conversation": conversation(server, images[0], args.max_tokens, args.timeout),
            }
        except openai.APIError as error:
            return {"loads_smolvlm": False, "error": f"{type(error).__name__}: {error}"[:600]}
        result["load"] = load(server, images, 1, args.max_tokens, args.timeout)
        return result
    finally:
        server.stop()


if __name__ == "__main__":
    main()
