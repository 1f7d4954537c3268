"""`smolcli bench`: speed and memory of a cold answer on this machine, with a random model in a release's shapes."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from smolcli.cli.output import progress
from smolcli.util.units import size_text


def bench(
    shape: Annotated[
        str, typer.Option("--shape", metavar="SHAPE", help="Which release's shapes: tiny (tests), 256m, 500m or 2.2b.")
    ] = "256m",
    quant: Annotated[
        str, typer.Option("--quant", metavar="TYPE", help="Language-model quant type, as for smolcli convert.")
    ] = "Q4_K_M",
    mmproj_type: Annotated[
        str, typer.Option("--mmproj-type", metavar="TYPE", help="Vision-encoder type, as for smolcli convert.")
    ] = "Q8_0",
    tokens: Annotated[
        int, typer.Option("--tokens", "-n", help="New tokens per answer, all of them generated (--ignore-eos).")
    ] = 32,
    threads: Annotated[
        Optional[int], typer.Option("--threads", "-t", help="CPU threads for every run (default: all cores).")
    ] = None,
    repeats: Annotated[
        int, typer.Option("--repeats", help="Runs per setting, interleaved; the table shows medians.")
    ] = 3,
    max_tiles: Annotated[
        Optional[list[int]],
        typer.Option("--max-tiles", metavar="N", help="Also measure with smolcli ask --max-tiles N; repeatable."),
    ] = None,
    image_size: Annotated[
        Optional[list[int]],
        typer.Option("--image-size", metavar="PX", help="Also measure with smolcli ask --image-size PX; repeatable."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (every run, medians, machine) instead of the table.")
    ] = False,
    plan: Annotated[bool, typer.Option("--plan", help="Show the memory plan instead of measuring.")] = False,
    video: Annotated[
        bool,
        typer.Option(
            "--video", help="Measure video frames/s through each vision encoder (mtmd, ONNX Runtime) instead."
        ),
    ] = False,
) -> None:
    """Measure load, vision encoding, prefill, decoding and peak memory of `smolcli ask` here.

    A random-weight checkpoint in the chosen release's real shapes is written and converted
    once (kept in $SMOLCLI_HOME/bench, default ~/.cache/smolcli/bench on Linux; remove that
    folder to get the space back). Every run is a fresh `smolcli ask --json --ignore-eos
    --no-cache` process about the same 1024x768 photo-like image, so each peak RSS is its own.
    The model's own detail is always measured; each --max-tiles and --image-size adds a setting.
    The weights are random, so the answers are noise; the work per token and per tile is real.
    Progress goes to stderr, the table (or --json) to stdout.

    Examples:

      smolcli bench

      smolcli bench --shape 2.2b --tokens 16 --repeats 1

      smolcli bench --max-tiles 6 --max-tiles 4 --image-size 1024 --threads 4

      smolcli bench --shape 500m --quant Q8_0 --json > bench.json

      smolcli bench --video --repeats 3
    """
    if video:
        from smolcli.bench.video_frames import VideoBenchOptions, run_video_bench, video_table_lines

        options = VideoBenchOptions(shape, quant, mmproj_type, threads, repeats)
        result = run_video_bench(options, report=progress)
        typer.echo(json.dumps(result, indent=2) if as_json else "\n".join(video_table_lines(result)))
        return
    if plan:
        from smolcli.cli.bench_plan import show_plan

        show_plan(as_json)
        return

    from smolcli.bench.runs import BenchOptions, run_bench

    options = BenchOptions(
        shape=shape,
        quant=quant,
        mmproj_type=mmproj_type,
        tokens=tokens,
        threads=threads,
        repeats=repeats,
        max_tiles=tuple(max_tiles or ()),
        image_sizes=tuple(image_size or ()),
    )
    result = run_bench(options, report=progress)
    typer.echo(json.dumps(result, indent=2) if as_json else "\n".join(table_lines(result)))


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _rate(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def table_lines(result: dict) -> list[str]:
    host, packages = result["machine"], result["versions"]
    runs = "run" if result["repeats"] == 1 else f"median of {result['repeats']} runs"
    lines = [
        f"SmolVLM {result['shape']} shapes (random weights), {result['quant']} + mmproj {result['mmproj_type']}, "
        f"{result['image']['width']}x{result['image']['height']} photo-like PNG, {result['tokens']} new tokens, "
        f"{_count(result['threads'], 'thread')}, {runs} per setting",
        f"machine: {host['cpu']}, {host['cores']} cores ({host['cores_available']} available to smolcli), "
        f"{_count(host['threads'], 'thread')} used; llama-cpp-python {packages['llama-cpp-python']}, smolcli {packages['smolcli']}",
        "",
        "| setting | edge px | tiles | image tok | load s | encode s | encode s/tile | prefill tok/s | decode tok/s "
        "| first token s | wall s | peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["settings"]:
        lines.append(
            f"| {row['setting']} | {row['longest_edge']} | {row['tiles']:g} | {row['image_tokens']:g} | {_seconds(row['load_s'])} "
            f"| {_seconds(row['encode_s'])} | {_seconds(row['encode_s_per_tile'])} | {_rate(row['prefill_tokens_per_s'])} "
            f"| {_rate(row['decode_tokens_per_s'])} | {_seconds(row['time_to_first_token_s'])} | {_seconds(row['wall_s'])} "
            f"| {size_text(int(row['peak_rss_bytes']))} |"
        )
    encoder = result["encoder"]
    reference = encoder["matmul_reference"]
    lines += [
        "",
        f"encoder throughput ({encoder['gflop_per_tile']:.3g} GFLOP per tile, counted from the shape: every weight "
        "matrix per patch, attention, the connector):",
    ]
    for row in result["settings"]:
        share = f", {row['encoder_fraction_of_reference']:.0%} of the reference" if reference else ""
        lines.append(f"  {row['setting']}: {row['encoder_gflops']:.1f} GFLOP/s{share}")
    if reference:
        lines.append(
            f"  reference: {reference['gflops']:.1f} GFLOP/s, {reference['what']}; llama.cpp runs the encoder on "
            f"{result['mmproj_type']} weights with its own kernels, so this is a yardstick, not a ceiling"
        )
    else:
        lines.append("  reference: the numpy matmul measurement failed, so no fraction is given")
    lines += [
        "",
        "tiles include the global view; load, encode and prefill are timed inside `smolcli ask`; first token = "
        "load + encode + prefill; wall = the whole process from outside (interpreter start to exit); "
        "peak RSS = the process's own VmHWM",
        f"model: {result['model']}",
        f"mmproj: {result['mmproj']}",
    ]
    return lines
