"""smolcli beside the CPU peers a user could pick instead: OpenVINO, llama.cpp's own mtmd path, transformers.

    python benchmarks/peers.py                      # SmolVLM-256M shapes, 32 tokens, 2 threads, 3 repeats
    python benchmarks/peers.py --shape 2.2b --repeats 1 --chart docs/peers.png --json

All four answer the same question about the same 1024x768 photo-like PNG from the same random real-shaped
checkpoint (`smolcli bench`'s, kept under $SMOLCLI_HOME/bench), greedy and exactly --tokens new tokens long:

  smolcli       `smolcli ask --json --no-cache --ignore-eos` on the GGUF pair (--quant + --mmproj-type), its
                ONNX encoder built beforehand as a first run leaves it (benchmarks/speed.py's runner)
  openvino      optimum-intel's OVModelForVisualCausalLM on an int8-weight IR of the checkpoint
                (`optimum-cli export openvino --weight-format int8`, cached), in its own venv
                (--openvino-venv, made on first use: benchmarks/openvino_peer.py); it computes in bf16 on CPUs
                with AVX-512 BF16 or AMX, which is why the header prints those flags
  mtmd          the same GGUF pair through raw llama-cpp-python: llama.cpp's own encoder and prefill
  transformers  AutoModelForImageTextToText in float32 on the checkpoint

Each run is a fresh process (imports, load, image, prompt, answer); runs interleave, the runners' order turning
each repeat, and the table gives medians. Columns:

  whole s       the process from outside, interpreter start to exit
  encoder s     the vision encoder over every tile: smolcli's own timing (--json); mtmd: mtmd_encode_chunk timed
                per image chunk; openvino: its get_vision_embeddings call (vision tower and connector);
                transformers: forward hooks from the vision tower's start to the connector's end
  prefill s     the prompt's forward pass without the encoder: smolcli's own timing; mtmd: decoding the chunks;
                openvino and transformers: generate() up to the first token's logits, minus the encoder
  decode tok/s  the tokens after the first, one forward pass each
  peak RSS      each process's own VmHWM

The ratio table divides smolcli's figure by each peer's: time (decode: time per token) or memory, so below 1 means
smolcli is faster or smaller. Random weights: the answers are gibberish, the work is real.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from measure import run_fresh  # benchmarks/, beside this script
from openvino_peer import ANSWER, DEFAULT_VENV, ensure_venv, exported
from speed import (
    QUESTION,
    draw_chart,
    machine,
    median_run,
    prepare_onnx,
    run_direct,
    run_smolcli,
    run_transformers,
    versions,
)

RUNNERS = ("smolcli", "openvino", "mtmd", "transformers")
PEERS = RUNNERS[1:]
SHAPES = ("256m", "500m", "2.2b")
CPU_FLAGS = ("avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# (column heading, figure, format); a figure that is None prints "-"
COLUMNS = (
    ("whole s", "wall_s", "{:.2f}"),
    ("encoder s", "encoder_s", "{:.2f}"),
    ("prefill s", "prefill_s", "{:.2f}"),
    ("decode tok/s", "decode_tokens_per_s", "{:.1f}"),
    ("peak RSS GB", "peak_rss_gb", "{:.2f}"),
)
# smolcli / peer, each a cost (lower is better): decode as seconds per token
RATIOS = (
    ("whole", "wall_s"),
    ("encoder", "encoder_s"),
    ("prefill", "prefill_s"),
    ("decode s/token", "decode_s_per_token"),
    ("peak RSS", "peak_rss_gb"),
)
COLOURS = {
    "smolcli": (50, 110, 190),
    "openvino": (130, 60, 170),
    "mtmd": (120, 120, 120),
    "transformers": (222, 120, 60),
}
CHART_LABELS = {
    "smolcli": "smolcli",
    "openvino": "OpenVINO int8",
    "mtmd": "llama.cpp mtmd",
    "transformers": "transformers fp32",
}
CHART_PANELS = (
    ("whole process, cold answer (s)", "wall_s", 1.0, "{:.1f} s"),
    ("vision encoder (s)", "encoder_s", 1.0, "{:.2f} s"),
    ("prefill without the encoder (s)", "prefill_s", 1.0, "{:.2f} s"),
    ("decode (tokens/s)", "decode_tokens_per_s", 1.0, "{:.1f}"),
    ("peak RSS (GB)", "peak_rss_gb", 1.0, "{:.2f} GB"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="256m", choices=SHAPES, help="SmolVLM release whose shapes to use")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per answer, forced (default 32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs per runner, interleaved; medians")
    parser.add_argument("--quant", default="Q4_K_M", help="smolcli's and mtmd's text model type")
    parser.add_argument("--mmproj-type", default="Q8_0")
    parser.add_argument(
        "--runners",
        default=",".join(RUNNERS),
        help=f"comma-separated subset of {','.join(RUNNERS)} (smolcli always runs: the ratios are against it)",
    )
    parser.add_argument(
        "--openvino-venv",
        type=Path,
        default=DEFAULT_VENV,
        help="OpenVINO's own virtualenv, made there on first use (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw numbers as one JSON object instead")
    parser.add_argument("--chart", type=Path, help="also write a PNG bar chart here")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="REPORT",
        help="measure nothing: print the table (and --chart) of an earlier --json report",
    )
    args = parser.parse_args(argv)
    if args.tokens < 2 or args.repeats < 1 or args.threads < 1:
        parser.error("--tokens must be at least 2, --repeats and --threads at least 1")
    chosen = [name.strip() for name in args.runners.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(RUNNERS))
    if unknown:
        parser.error(f"unknown runner(s) {', '.join(unknown)}: choose from {','.join(RUNNERS)}")
    args.runners = tuple(r for r in RUNNERS if r == "smolcli" or r in chosen)
    if args.chart and args.chart.suffix.lower() != ".png":
        parser.error(f"--chart writes a PNG: give a path ending in .png, not {args.chart.name}")
    return args


def cpu_facts() -> dict:
    """The CPU's model name and which of the flags that change OpenVINO's and ONNX Runtime's kernels it has."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {**machine(), "flags": {flag: flag in flags for flag in CPU_FLAGS}, "load_average": os.getloadavg()}


def phases(run: dict) -> dict:
    """A runner's raw figures as the table's columns (runs report prefill_s with the encoder inside, as speed.py)."""
    encoder = run.get("image_encode_s")
    decode_s, tokens = run.get("decode_s"), run.get("decoded_tokens")
    per_token = decode_s / tokens if decode_s and tokens else None
    return {
        "wall_s": run["wall_s"],
        "encoder_s": encoder,
        "prefill_s": None if encoder is None else run["prefill_s"] - encoder,
        "decode_tokens_per_s": 1 / per_token if per_token else None,
        "decode_s_per_token": per_token,
        "peak_rss_gb": run["peak_rss_bytes"] / 1e9,
        "prompt_tokens": run.get("prompt_tokens"),
    }


def median_phases(runs: list[dict]) -> dict:
    """Per-column medians over repeats; a column missing from any run stays None."""
    return {
        key: None if any(r[key] is None for r in runs) else statistics.median(r[key] for r in runs) for key in runs[0]
    }


def ratios(repeats: list[dict[str, dict]], peers: tuple[str, ...]) -> dict[str, dict]:
    """peer -> figure -> median over repeats of smolcli's figure / the peer's (None where either is missing)."""
    found: dict[str, dict] = {}
    for peer in peers:
        found[peer] = {}
        for _, key in RATIOS:
            pairs = [(r["smolcli"][key], r[peer][key]) for r in repeats]
            usable = all(ours is not None and theirs for ours, theirs in pairs)
            found[peer][key] = statistics.median(ours / theirs for ours, theirs in pairs) if usable else None
    return found


def cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def header_lines(host: dict, setup: str) -> list[str]:
    flags = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in host["flags"].items())
    load, end = host.get("load_average"), host.get("load_average_end")
    busy = f"; load average {load[0]:.1f} at the start" if load else ""
    busy += f", {end[0]:.1f} at the end" if load and end else ""
    return [
        f"CPU: {host['cpu']}, {host['cores']} cores ({flags}){busy}",
        setup,
    ]


def table(results: dict[str, dict], labels: dict[str, str], figures: dict[str, dict]) -> list[str]:
    """The figures table, then smolcli / peer per figure, as Markdown."""
    runners = [r for r in RUNNERS if r in results]
    lines = [
        "| runner | " + " | ".join(heading for heading, _, _ in COLUMNS) + " | prompt tokens |",
        "| --- " * (len(COLUMNS) + 2) + "|",
    ]
    for runner in runners:
        r = results[runner]
        cells = [cell(r[key], fmt) for _, key, fmt in COLUMNS]
        lines.append(f"| {labels[runner]} | " + " | ".join(cells) + f" | {cell(r['prompt_tokens'], '{:.0f}')} |")
    if figures:
        lines += [
            "",
            "| smolcli / peer | " + " | ".join(heading for heading, _ in RATIOS) + " |",
            "| --- " * (len(RATIOS) + 1) + "|",
        ]
        for peer, values in figures.items():
            lines.append(
                f"| / {labels[peer]} | " + " | ".join(cell(values[key], "{:.2f}x") for _, key in RATIOS) + " |"
            )
    return lines


def labels_for(args: argparse.Namespace, openvino_details: tuple[str | None, ...] = ()) -> dict:
    details = ", ".join(d for d in openvino_details if d)
    return {
        "smolcli": f"smolcli {args.quant} + {args.mmproj_type}",
        "openvino": f"OpenVINO int8 IR ({details})" if details else "OpenVINO int8 IR",
        "mtmd": f"llama.cpp mtmd {args.quant} + {args.mmproj_type}",
        "transformers": "transformers fp32",
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_json:
        output(replay(args.from_json), args)
        return
    from smolcli.bench.files import prepare_files
    from smolcli.errors import SmolcliError
    from smolcli.runtime.chat.prompting import first_turn, place_images

    try:
        files, _ = prepare_files(args.shape, args.quant, args.mmproj_type, args.threads, log)
    except SmolcliError as error:
        sys.exit(f"error: {error}")
    prompt = first_turn(place_images(QUESTION, 1))  # what smolcli ask builds from QUESTION and one image
    home = files.folder / "runs" / "peers"  # SMOLCLI_HOME of the smolcli runs: its ONNX encoder stays there
    home.mkdir(parents=True, exist_ok=True)
    prepare_onnx(files.mmproj, home)
    if "openvino" in args.runners:
        python = ensure_venv(args.openvino_venv, log)
        ir = exported(python, files.checkpoint, files.checkpoint.parent / "openvino-int8", log)
    host = cpu_facts()

    def run(runner: str) -> dict:
        tokens, threads = str(args.tokens), str(args.threads)
        if runner == "smolcli":
            return run_smolcli(files.model, files.mmproj, files.image, args.tokens, args.threads, home)
        if runner == "mtmd":
            return run_direct(files.model, files.mmproj, files.image, prompt, args.tokens, args.threads)
        if runner == "transformers":
            return run_transformers(files.checkpoint, files.image, prompt, args.tokens, args.threads)
        return run_fresh(
            ANSWER, [str(ir), str(files.checkpoint), str(files.image), prompt, tokens, threads], python=str(python)
        )

    raw: list[dict[str, dict]] = []
    repeats: list[dict[str, dict]] = []
    for index in range(args.repeats):
        order = args.runners[index % len(args.runners) :] + args.runners[: index % len(args.runners)]
        runs = {}
        for runner in order:
            log(f"repeat {index + 1}/{args.repeats}: {runner} ...")
            runs[runner] = run(runner)
            runs[runner].pop("output", None)
            log(f"  {runs[runner]['wall_s']:.1f} s, peak RSS {runs[runner]['peak_rss_bytes'] / 1e9:.2f} GB")
        raw.append(runs)
        repeats.append({runner: phases(figures) for runner, figures in runs.items()})

    host["load_average_end"] = os.getloadavg()  # a shared machine: how busy it was while measuring
    results = {runner: median_phases([r[runner] for r in repeats]) for runner in args.runners}
    peers = tuple(r for r in args.runners if r != "smolcli")
    figures = ratios(repeats, peers)
    ov = median_run([r["openvino"] for r in raw]) if "openvino" in args.runners else {}
    ov_version = ov.get("openvino")
    labels = labels_for(args, (ov_version and f"openvino {ov_version}", ov.get("inference_precision")))
    engine = raw[0]["smolcli"].get("vision_engine")
    setup = (
        f"random SmolVLM {args.shape} shapes, 1024x768 photo, {args.tokens} new tokens (forced, greedy), "
        f"{args.threads} threads, median of {args.repeats} interleaved run{'s' if args.repeats > 1 else ''}"
        f"{f', vision encoder of smolcli: {engine}' if engine else ''}"
    )
    report = {
        "machine": host,
        "setup": setup,
        "command": "python benchmarks/peers.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "shape": args.shape,
        "tokens": args.tokens,
        "threads": args.threads,
        "repeats": args.repeats,
        "versions": {**versions(), **({"openvino": ov_version} if ov_version else {})},
        "labels": labels,
        "results": results,
        "ratios": figures,
        "runs": raw,
    }
    output(report, args)


def output(report: dict, args: argparse.Namespace) -> None:
    """The table (or the report itself with --json) on stdout, and the chart where --chart asks for one."""
    results = report["results"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        lines = header_lines(report["machine"], report["setup"]) + [""]
        print("\n".join(lines + table(results, report["labels"], report["ratios"])))
    if args.chart:
        title = f"{report['setup']}; {report['machine']['cpu']}"
        runners = tuple(r for r in RUNNERS if r in results)
        draw_chart(results, CHART_LABELS, title, args.chart, runners, CHART_PANELS, COLOURS)
        log(f"wrote {args.chart}")


def replay(path: Path) -> dict:
    """An earlier --json report, checked enough to print: a one-line error for anything else."""
    try:
        report = json.loads(path.read_text())
        if not {"machine", "setup", "labels", "results", "ratios"} <= set(report) or "smolcli" not in report["results"]:
            raise ValueError
    except (OSError, ValueError, TypeError):
        sys.exit(f"error: {path} is not a report of `peers.py --json`; run the benchmark with --json > FILE first")
    return report


if __name__ == "__main__":
    main()
