"""Seconds per image tile: mtmd (Q8_0 mmproj, today's default) against ONNX Runtime fp32 and int8, side by side.

    python benchmarks/vision_engines.py --threads 2 [--layers 6] [--repeats 2]

Random weights in SmolVLM-256M's real shapes (smolcli.bench.files.prepare_files: a Q8_0 model with a
Q8_0 mmproj for mtmd, an F16 mmproj that the ONNX forms are built from), and the bench's 1024x768
photo (13 tiles with the global view). Each engine answers the same prompt through the engine
(preprocessing, encoder, connector); the figure is the encoder time over the tiles encoded, the
best of --repeats (the first also loads the ONNX session). With transformers installed it also prints each path's max |d embedding| and
worst tile cosine against transformers' fp32 vision model + connector on the same pixels.
Ratios mean more than the seconds: the machine may be shared with other processes.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

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


def seconds_per_tile(model: Path, mmproj: Path, image, threads: int, encoder, repeats: int) -> tuple[float, int]:
    from smolcli.runtime.engine import Engine, EngineOptions
    from smolcli.runtime.model_files import resolve_model_files

    best, tiles = float("inf"), 0
    with Engine(resolve_model_files(model, mmproj), EngineOptions(threads=threads, vision_encoder=encoder)) as engine:
        engine.create_context(2048)
        for _ in range(repeats):
            engine.clear()
            if encoder is not None:
                encoder.forget()  # it holds the last images' embeddings: encode them again
            before = engine.counters.snapshot()
            prompt = engine.tokenize(PROMPT, [image])
            try:
                engine.evaluate(prompt)
            finally:
                prompt.free()
            tiles = engine.counters.images_encoded - before.images_encoded
            best = min(best, (engine.counters.encode_seconds - before.encode_seconds) / tiles)
    return best, tiles


def reference_diffs(checkpoint: Path, mmproj: Path, image, threads: int, folder: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForImageTextToText
    except ImportError:
        print("(transformers not installed: no embedding differences)")
        return
    import onnxruntime as ort

    from smolcli.runtime.gguf_file import read_gguf
    from smolcli.runtime.image_preprocess import pixel_values
    from smolcli.runtime.onnx_vision import build_or_reuse

    meta = read_gguf(mmproj).metadata
    pixels = pixel_values(
        image,
        int(meta["clip.vision.preproc_image_size"]),
        int(meta["clip.vision.image_size"]),
        list(meta["clip.vision.image_mean"]),
        list(meta["clip.vision.image_std"]),
    )
    torch.set_num_threads(threads)
    hf = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf.model.connector(hf.model.vision_model(pixel_values=torch.from_numpy(pixels)).last_hidden_state)
    ref = ref.numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    for label, precision, kind in (
        ("fp32", "fp32", ""),
        ("int8 dynamic", "int8", "dynamic"),
        ("int8 per-row", "int8", "per-row"),
    ):
        path = build_or_reuse(mmproj, precision, folder, kind or "per-row")
        ours = ort.InferenceSession(str(path), options).run(None, {"pixel_values": pixels})[0]
        a, b = ref.reshape(len(ref), -1), ours.reshape(len(ours), -1)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        print(f"  ONNX {label:13s} max |d embedding| {np.abs(ref - ours).max():.4f}  worst tile cosine {cos.min():.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from smolcli.bench.files import prepare_files
    from smolcli.runtime.images import load_image

    q8, _ = prepare_files("256m", "Q8_0", "Q8_0", report=print)
    f16, _ = prepare_files("256m", "Q8_0", "F16", report=print)
    image = load_image(q8.image)
    folder = Path(tempfile.mkdtemp(prefix="smolcli-onnx-bench-"))  # the ONNX files: hundreds of MB, removed at the end
    try:
        measure(args, q8, f16, image, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure(args, q8, f16, image, folder: Path) -> None:
    from smolcli.runtime.onnx_vision import OnnxVisionEncoder, build_or_reuse

    print(f"CPU: {cpu_name()}, {args.threads} threads, {os.cpu_count()} cores (shared machine: compare ratios)")
    runs = [
        ("mtmd, Q8_0 mmproj", q8.mmproj, None),
        ("ONNX fp32", f16.mmproj, OnnxVisionEncoder(args.threads, "fp32", folder=folder)),
        ("ONNX int8 dynamic", f16.mmproj, OnnxVisionEncoder(args.threads, "int8", folder=folder, int8_kind="dynamic")),
        ("ONNX int8 per-row", f16.mmproj, OnnxVisionEncoder(args.threads, "int8", folder=folder, int8_kind="per-row")),
    ]
    baseline = None
    for label, mmproj, encoder in runs:
        if encoder is not None:  # build (and cache) outside the timing, as a second run would find it
            build_or_reuse(mmproj, encoder.precision, folder, encoder.int8_kind)
        per_tile, tiles = seconds_per_tile(q8.model, mmproj, image, args.threads, encoder, args.repeats)
        baseline = baseline or per_tile
        print(
            f"{label:20s} {per_tile:.3f} s/tile  {per_tile * tiles:6.2f} s for {tiles} tiles  {per_tile / baseline:.2f}x mtmd"
        )
    print("against transformers fp32 (F16 mmproj weights, same pixels):")
    reference_diffs(f16.checkpoint, f16.mmproj, image, args.threads, folder)


if __name__ == "__main__":
    main()
