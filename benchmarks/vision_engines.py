"""Seconds per image tile: mtmd (Q8_0 mmproj, today's default) against ONNX Runtime fp32 and each int8 form, side by side.

    python benchmarks/vision_engines.py --threads 2 [--repeats 2] [--kinds asym-fp32-vo,per-row,nbits] [--bf16]
    python benchmarks/vision_engines.py --threads 2 --mtmd-only   # mtmd on our own tiles against whole images
    python benchmarks/vision_engines.py --threads 2 --profile [--kinds asym-fp32-vo]

Random weights in SmolVLM-256M's real shapes (smolcli.bench.files.prepare_files: a Q8_0 model with a
Q8_0 mmproj for mtmd, an F16 mmproj that the ONNX forms are built from), and the bench's 1024x768
photo (13 tiles with the global view). Each engine answers the same prompt through the engine
(preprocessing, encoder, connector); the figure is the encoder time over the tiles encoded, the
best of --repeats rounds, the engines interleaved within each round (sessions are loaded before), and the
median over rounds of each round's time over mtmd Q8_0's in that round (the steadier ratio where the machine's
speed drifts).
With transformers installed it also prints each path's embedding error against transformers' fp32
vision model + connector on the same pixels, and its ratio to the "nbits" form's (blocks of 32 for
weights and activations: Q8_0's arithmetic). Ratios mean more than the seconds: the machine may be
shared, so the load average is printed with the figures. --bf16 adds --vision-precision bf16 (the fp32 graph
through OpenVINO in bfloat16; needs openvino and a CPU with bf16).

--profile: the int8 form (the default kind, or each of --kinds in turn) under ORT's profiler, kernel time
by op type, each op type's multiply-adds per tile and its rate, and those rates against a large square u8 x s8
MatMulInteger through ORT on the same threads (the practical int8 peak) and AVX-512 VNNI's
theoretical one from the clock.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from measure import install_torchvision_shim  # benchmarks/, beside this script

PROMPT = "<|im_start|>User:<image>What is in this image?<end_of_utterance>\nAssistant:"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    flags = next((line for line in out.splitlines() if line.startswith("Flags")), "")
    features = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    return f"{name} ({', '.join(features) or 'no AVX2'})"


def load_average() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def one_answer(model: Path, mmproj: Path, image, threads: int, encoder, own_tiles: bool = True) -> tuple[float, int]:
    """(encoder seconds per tile, tiles) of one prompt with the image, the ONNX session's loading left out.

    The image's preprocessing is in the figure wherever it runs: mtmd cutting whole images resizes them while
    tokenizing (own_tiles False, its tokenize time added), our own tiles are cut on the first tile's encode."""
    from smolcli.runtime.gguf.model_files import resolve_model_files
    from smolcli.runtime.llama.engine import Engine, EngineOptions

    loading = encoder.build_seconds if encoder is not None else 0.0
    options = EngineOptions(threads=threads, vision_encoder=encoder, mtmd_own_tiles=own_tiles)
    with Engine(resolve_model_files(model, mmproj), options) as engine:
        context = engine.new_context(2048)
        started = time.perf_counter()
        prompt = engine.tokenize(PROMPT, [image])
        tokenizing = time.perf_counter() - started
        try:
            engine.evaluate(prompt, context)
        finally:
            prompt.free()
        if encoder is not None:
            loading = encoder.build_seconds - loading  # the session was loaded inside the first tile's encode
            encoder.release()  # an ORT session holds its arena (GBs for 13 tiles): one at a time
        tiles = engine.counters.images_encoded
        return (engine.counters.encode_seconds + tokenizing - loading) / tiles, tiles


def pixels_of(mmproj: Path, image) -> np.ndarray:
    from smolcli.runtime.gguf.gguf_file import read_gguf
    from smolcli.runtime.vision.image_preprocess import pixel_values

    meta = read_gguf(mmproj).metadata
    return pixel_values(
        image,
        int(meta["clip.vision.preproc_image_size"]),
        int(meta["clip.vision.image_size"]),
        list(meta["clip.vision.image_mean"]),
        list(meta["clip.vision.image_std"]),
    )


def transformers_embeddings(checkpoint: Path, pixels: np.ndarray, threads: int) -> np.ndarray | None:
    try:
        install_torchvision_shim()  # transformers imports the test extra's torchvision, which needs two schemas first
        import torch
        from transformers import AutoModelForImageTextToText
    except ImportError:
        return None
    torch.set_num_threads(threads)
    try:
        hf = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    except (ImportError, RuntimeError) as error:  # a torch / torchvision mismatch
        print(f"(transformers cannot load the model: {error})")
        return None
    with torch.no_grad():
        ref = hf.model.connector(hf.model.vision_model(pixel_values=torch.from_numpy(pixels)).last_hidden_state)
    return ref.numpy()


def embedding_errors(ref: np.ndarray, ours: np.ndarray) -> dict[str, float]:
    a, b = ref.reshape(len(ref), -1), ours.reshape(len(ours), -1)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "relative": float(np.linalg.norm(ours - ref) / np.linalg.norm(ref)),
        "max": float(np.abs(ours - ref).max()),
        "cosine": float(cos.min()),
    }


def main() -> None:
    from smolcli.runtime.vision.onnx_int8 import INT8_KINDS
    from smolcli.runtime.vision.onnx_vision import INT8_KIND

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the best of them is reported")
    parser.add_argument(
        "--kinds", help=f"int8 forms, of {', '.join(INT8_KINDS)} (default: all; --profile: {INT8_KIND})"
    )
    parser.add_argument("--profile", action="store_true", help="time by op type and the int8 peak fraction")
    parser.add_argument("--mtmd-only", action="store_true", help="only mtmd, on our own tiles and on whole images")
    parser.add_argument("--bf16", action="store_true", help="also the fp32 graph through OpenVINO in bf16")
    args = parser.parse_args()
    kinds = [k for k in (args.kinds or "").split(",") if k] or ([INT8_KIND] if args.profile else list(INT8_KINDS))
    unknown = [k for k in kinds if k not in INT8_KINDS]
    if unknown:
        parser.error(f"unknown --kinds {', '.join(unknown)}; choose from {', '.join(INT8_KINDS)}")

    from smolcli.bench.files import prepare_files
    from smolcli.runtime.vision.images import load_image

    q8, _ = prepare_files("256m", "Q8_0", "Q8_0", report=print)
    f16, _ = prepare_files("256m", "Q8_0", "F16", report=print)
    image = load_image(q8.image)
    print(f"CPU: {cpu_name()}, {args.threads} threads, {os.cpu_count()} cores (shared machine: compare ratios)")
    folder = Path(tempfile.mkdtemp(prefix="smolcli-onnx-bench-"))  # the ONNX files: hundreds of MB, removed at the end
    try:
        if args.profile:  # each kind in turn, in one run: before and after side by side
            for kind in kinds:
                profile(args.threads, f16.mmproj, pixels_of(f16.mmproj, image), folder, kind)
        else:
            measure(args, kinds, q8, f16, image, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def large_gain_twin(mmproj: Path, target: Path) -> Path:
    """A copy of the mmproj whose vision LayerNorms have trained towers' large-gain channels (the test helper's
    LARGE_GAIN on its large_gain_channels), scaled in place in the copy: those tensors are float32 in every
    mmproj type. The default int8 form then splits those channels off: its time with the split at work."""
    import gguf

    from smolcli.synthetic.random_checkpoint import LARGE_GAIN, large_gain_channels

    shutil.copyfile(mmproj, target)
    reader = gguf.GGUFReader(target)
    with open(target, "r+b") as handle:
        for tensor in reader.tensors:
            if tensor.name.endswith(("ln1.weight", "ln2.weight", "post_ln.weight")) and tensor.name.startswith("v."):
                assert tensor.tensor_type == gguf.GGMLQuantizationType.F32, tensor.name
                values = np.array(tensor.data, np.float32)
                values[large_gain_channels(len(values))] *= LARGE_GAIN
                handle.seek(tensor.data_offset)
                handle.write(values.tobytes())
    return target


def measure(args, kinds: list[str], q8, f16, image, folder: Path) -> None:
    from smolcli.bench.onnx_profile import session
    from smolcli.runtime.vision.onnx_vision import INT8_KIND, OnnxVisionEncoder, build, build_or_reuse

    runs = [
        ("mtmd, Q8_0 mmproj", q8.mmproj, None),
        ("mtmd, Q8_0, whole images", q8.mmproj, "whole"),  # mtmd's own resampler (EngineOptions.mtmd_own_tiles)
    ]
    if args.mtmd_only:
        kinds = []
    else:
        runs.append(("ONNX fp32", f16.mmproj, OnnxVisionEncoder(args.threads, "fp32", folder=folder)))
        if args.bf16:
            runs.append(("OpenVINO bf16", f16.mmproj, OnnxVisionEncoder(args.threads, "bf16", folder=folder)))
    for kind in kinds:
        label = f"ONNX int8 {kind}" + (" (default)" if kind == INT8_KIND else "")
        runs.append((label, f16.mmproj, OnnxVisionEncoder(args.threads, "int8", folder=folder, int8_kind=kind)))
    outlier_kinds = [kind for kind in kinds if kind.startswith(INT8_KIND)]  # the default and its former formats
    if outlier_kinds:  # with their outlier channels found: the fp32 side products at work
        gained = large_gain_twin(f16.mmproj, folder / f"large-gain-{f16.mmproj.name}")
        for kind in outlier_kinds:
            encoder = OnnxVisionEncoder(args.threads, "int8", folder=folder, int8_kind=kind)
            runs.append((f"ONNX int8 {kind}, large-gain", gained, encoder))
    for label, mmproj, encoder in runs:  # built outside the timing, as a second answer finds them
        if encoder not in (None, "whole"):
            started = time.perf_counter()
            built = build(mmproj, encoder.precision, folder, encoder.int8_kind)
            # the default int8 form's build includes its self-check (the fp32 graph built and run on the probe)
            checked = "" if built.probe_cosine is None else f" (self-check {built.probe_cosine:.5f}: {built.precision})"
            print(f"built {label} in {time.perf_counter() - started:.1f} s{checked}", flush=True)
    print(f"timing {len(runs)} engines, {args.repeats} interleaved rounds; before: {load_average()}")
    best = {label: float("inf") for label, _, _ in runs}
    # each round's time over mtmd Q8_0's in the same round: this machine's speed drifts by 10% over minutes, which
    # moves a best-of-rounds ratio (taken from different minutes) more than the rounds' median of same-round ratios
    in_round: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    tiles = 0
    for _ in range(args.repeats):
        this_round = {}
        for label, mmproj, encoder in runs:
            if encoder == "whole":
                per_tile, tiles = one_answer(q8.model, mmproj, image, args.threads, None, own_tiles=False)
            else:
                per_tile, tiles = one_answer(q8.model, mmproj, image, args.threads, encoder)
            best[label] = min(best[label], per_tile)
            this_round[label] = per_tile
        for label in in_round:
            in_round[label].append(this_round[label] / this_round[runs[0][0]])
    print(f"after: {load_average()}")
    for label, _, _ in runs:  # printed before the reference, which may fail to load
        ratio = f"{best[label] / best[runs[0][0]]:.2f}x mtmd, rounds' median {np.median(in_round[label]):.2f}x"
        print(f"{label:32s} {best[label]:.3f} s/tile  {ratio}", flush=True)

    if args.mtmd_only:
        return
    pixels = pixels_of(f16.mmproj, image)
    ref = transformers_embeddings(f16.checkpoint, pixels, args.threads)
    errors = {}
    if ref is None:
        print("(transformers not installed: no embedding errors)")
    else:
        for label, mmproj, encoder in runs[2:]:
            if mmproj != f16.mmproj:  # another encoder's weights: transformers' reference is the plain one's
                continue
            path = build_or_reuse(mmproj, encoder.precision, folder, encoder.int8_kind)
            if encoder.precision == "bf16":
                from smolcli.runtime.vision.openvino_encoder import openvino_session

                ov = openvino_session(path, args.threads)
                ours = np.concatenate([ov.run(None, {"pixel_values": tile[None]})[0] for tile in pixels])
            else:
                ours = session(path, args.threads).run(None, {"pixel_values": pixels})[0]
            errors[label] = embedding_errors(ref, ours)
    nbits = next((e["relative"] for label, e in errors.items() if label.startswith("ONNX int8 nbits")), None)
    baseline = best[runs[0][0]]
    print(f"\n{tiles} tiles; embedding errors against transformers fp32 (F16 mmproj weights, same pixels)")
    print(
        "| engine | s/tile | vs mtmd Q8_0 | same-round ratio, median | relative error | vs nbits (Q8_0's blocks) "
        "| max abs | worst tile cosine |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, _, _ in runs:
        e = errors.get(label)
        cells = [label, f"{best[label]:.3f}", f"{best[label] / baseline:.2f}x", f"{np.median(in_round[label]):.2f}x"]
        if e:
            versus = f"{e['relative'] / nbits:.2f}x" if nbits else ""
            cells += [f"{e['relative']:.4f}", versus, f"{e['max']:.4f}", f"{e['cosine']:.5f}"]
        else:
            cells += [""] * 4
        print("| " + " | ".join(cells) + " |")


def profile(threads: int, mmproj: Path, pixels: np.ndarray, folder: Path, kind: str) -> None:
    import onnx

    from smolcli.bench.onnx_profile import (
        INT8_ATTENTION,
        INT8_OPS,
        encoder_macs,
        matmul_peak,
        op_macs,
        time_by_op,
        vnni_peak,
    )
    from smolcli.runtime.vision.onnx_graph import read_vision_weights
    from smolcli.runtime.vision.onnx_vision import build_or_reuse

    path = build_or_reuse(mmproj, "int8", folder, kind)
    tiles = pixels[:1]  # one tile: the figures are per tile
    print(f"profiling int8 {kind}, one tile, {threads} threads; {load_average()}")
    by_op, wall = time_by_op(str(path), tiles, threads)
    w = read_vision_weights(mmproj)
    graph = onnx.load(path)
    macs = encoder_macs(graph, w.grid**2, w.tokens, w.width, w.layers)
    per_op = op_macs(graph, w.grid**2, w.tokens, w.width, w.layers)
    total = sum(by_op.values())
    practical, float_peak, theoretical = matmul_peak(threads), matmul_peak(threads, "MatMul"), vnni_peak(threads)
    print(f"run {wall:.3f} s, kernels {total:.3f} s")
    # each op type's multiply-adds over its kernel time, as a fraction of the practical int8 peak
    print("| op type | seconds | share | G multiply-adds | GMAC/s | of the int8 peak |")
    print("| --- | --- | --- | --- | --- | --- |")
    for op, seconds in sorted(by_op.items(), key=lambda item: -item[1]):
        rate = per_op.get(op, 0) / seconds / 1e9 if seconds else 0.0
        cells = [f"{per_op[op] / 1e9:.1f}", f"{rate:.0f}", f"{rate / practical:.0%}"] if op in per_op else [""] * 3
        print(f"| {op} | {seconds:.3f} | {seconds / total:.1%} | {' | '.join(cells)} |")
    int8_seconds = sum(by_op.get(op, 0.0) for op in (*INT8_OPS, INT8_ATTENTION))
    float_seconds = sum(by_op.get(op, 0.0) for op in ("MatMul", "Conv", "MultiHeadAttention"))
    int8_rate = macs["int8"] / int8_seconds / 1e9 if int8_seconds else 0.0
    whole = (macs["int8"] + macs["float"]) / wall / 1e9
    print(f"multiply-adds per tile: int8 {macs['int8'] / 1e9:.1f} G, float {macs['float'] / 1e9:.1f} G")
    print(
        f"int8 kernels: {int8_rate:.0f} GMAC/s; float MatMul + Conv + attention: {macs['float'] / max(float_seconds, 1e-9) / 1e9:.0f} GMAC/s"
    )
    print(
        f"ORT {2048}^3 MatMulInteger u8s8: {practical:.0f} GMAC/s (practical int8 peak); float32 MatMul {float_peak:.0f} GMAC/s"
    )
    line = f"int8 kernels at {int8_rate / practical:.0%} of the practical peak; whole encoder {whole:.0f} GMAC/s = {whole / practical:.0%}"
    if theoretical and max(practical, int8_rate) > theoretical:
        # the clock read is the base one (BogoMIPS) and the cores boost, or they issue more than one VPDPBUSD a cycle
        line += f"; the clock-based VNNI figure ({theoretical:.0f} GMAC/s) is below what was measured: not a bound"
    elif theoretical:
        line += f"; theoretical VNNI peak {theoretical:.0f} GMAC/s (int8 kernels {int8_rate / theoretical:.0%}, whole {whole / theoretical:.0%})"
    print(line)
    print(load_average())


if __name__ == "__main__":
    main()
