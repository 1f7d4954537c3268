"""Prefill of an image prompt on the ONNX vision path: one decode per text run and per tile, against the whole
prompt as one run of embedding rows (its text as token_embd's rows), side by side in one process.

    python benchmarks/prefill_rows.py [--shape 256m] [--quant Q4_K_M] [--threads 2] [--repeats 7] [--frames N]

benchmarks/speed.py's files (random weights in SmolVLM's real shapes, a Q4_K_M model and a Q8_0
mmproj, made once under ~/.cache/smolcli/bench) and its 1024x768 photo (13 tiles with the global
view on 256M), asked "What is in this image?". The tiles are encoded once, before the timing
(the ONNX encoder keeps them): each round empties the KV cache and evaluates the same prompt both
ways, in alternating order, and the figure is the engine's prefill_seconds (llama_decode and, for
rows, the token_embd lookups). Medians and bests of --repeats rounds; the machine may be shared,
so the load average is printed with the figures. Also prints max |dlogit| between the two ways, with
flash attention (the default, whose numbers move with how batches are cut) and without.
--frames N: a video prompt instead (N synthetic frames of one tile's square, as `ask --video` lays them
out, the photo left out), one decode per frame and text run against one run of rows; the frames'
embeddings come from an embedding cache in a temporary folder after the first round.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from speed import prepared  # benchmarks/, beside this script
from vision_engines import PROMPT, cpu_name, load_average

from smolcli.synthetic.images import photo_like


def video_prompt(engine, n_frames: int):
    """(prompt, evaluate) for a question about n_frames synthetic frames, laid out as `ask --video` does."""
    from smolcli.models.smolvlm_video import VIDEO_MARKER, place_video, video_text
    from smolcli.runtime.chat.prompting import first_turn
    from smolcli.runtime.video.video_prompt import FrameVision, evaluate_video_prompt, tokenize_video_prompt
    from smolcli.runtime.vision.images import RGBImage

    vision = FrameVision(engine, engine.files.mmproj)
    side = vision.tile
    frames = [RGBImage(f"f{i}", side, side, photo_like(side, side, i).tobytes()) for i in range(n_frames)]
    stamps = [float(i) for i in range(n_frames)]
    text = first_turn(place_video("What happens?"), None).replace(VIDEO_MARKER, video_text(stamps, n_frames), 1)
    prompt = tokenize_video_prompt(engine, vision, text, [], frames)
    return prompt, lambda: evaluate_video_prompt(engine, vision, prompt)


def main() -> None:
    from smolcli.runtime.gguf.model_files import resolve_model_files
    from smolcli.runtime.llama.engine import Engine, EngineOptions
    from smolcli.runtime.vision.embedding_cache import EmbeddingCache
    from smolcli.runtime.vision.images import load_image
    from smolcli.runtime.vision.onnx_vision import OnnxVisionEncoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256m")
    parser.add_argument("--quant", default="Q4_K_M")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "smolcli" / "bench")
    parser.add_argument("--frames", type=int, default=0, help="a video prompt of this many frames instead")
    args = parser.parse_args()

    _, model, mmproj = prepared(args.workdir, args.shape, args.quant, "Q8_0")
    photo = args.workdir / "photo-1024x768.png"
    if not photo.exists():
        photo_like(1024, 768).save(photo)
    encoder = OnnxVisionEncoder(args.threads, folder=args.workdir / "onnx-vision")
    scratch = tempfile.TemporaryDirectory(prefix="prefill-rows-")
    cache = EmbeddingCache(Path(scratch.name)) if args.frames else None
    options = EngineOptions(threads=args.threads, vision_encoder=encoder, embedding_cache=cache)
    with Engine(resolve_model_files(model, mmproj), options) as engine, scratch:
        context = engine.new_context(4096)
        if args.frames:
            prompt, evaluate = video_prompt(engine, args.frames)
            print(f"{model.name}: {prompt.n_tokens} prompt tokens ({prompt.n_image_tokens} for {args.frames} frames)")
        else:
            prompt = engine.tokenize(PROMPT, [load_image(photo)])
            evaluate = lambda: engine.evaluate(prompt, context)  # noqa: E731
            n_text = sum(c.n_tokens for c in prompt.chunks if c.kind == "text")
            texts = sum(1 for c in prompt.chunks if c.kind == "text")
            print(f"{model.name}: {prompt.n_tokens} prompt tokens ({prompt.n_image_tokens} image, {n_text} text)")
            print(f"  {len(prompt.chunks) - texts} tiles and {texts} text runs; n_batch {engine.n_batch}")
        started = time.perf_counter()
        evaluate()  # encodes every tile or frame, outside the timing
        print(f"  tiles encoded in {time.perf_counter() - started:.1f} s (not timed below)")
        seconds: dict[str, list[float]] = {"per-chunk": [], "rows": []}
        logits: dict[str, np.ndarray] = {}
        print(load_average())
        for round_ in range(args.repeats):
            ways = ["per-chunk", "rows"] if round_ % 2 == 0 else ["rows", "per-chunk"]
            for way in ways:
                context.clear()
                engine.options.prefill_as_rows = way == "rows"
                before = engine.counters.prefill_seconds
                evaluate()
                seconds[way].append(engine.counters.prefill_seconds - before)
                logits[way] = context.last_logits()
            print(f"  round {round_ + 1}: " + ", ".join(f"{w} {seconds[w][-1]:.3f} s" for w in ways), flush=True)
        print(load_average())
        engine.options.flash_attention = False
        context = engine.new_context(4096)
        exact = {}
        for way in ("per-chunk", "rows"):
            context.clear()
            engine.options.prefill_as_rows = way == "rows"
            evaluate()
            exact[way] = context.last_logits()
        prompt.free()
    print(cpu_name())
    print("| way | median prefill s | best s | rounds |\n|---|---|---|---|")
    for way, values in seconds.items():
        print(f"| {way} | {statistics.median(values):.3f} | {min(values):.3f} | {len(values)} |")
    chunk, rows = (statistics.median(seconds[w]) for w in ("per-chunk", "rows"))
    print(f"rows / per-chunk: {rows / chunk:.3f} (median), saved {chunk - rows:.3f} s")
    for label, pair in (("flash attention on", logits), ("off", exact)):
        diff = float(np.abs(pair["rows"] - pair["per-chunk"]).max())
        print(f"max |dlogit| rows vs per-chunk, {label}: {diff:.2e} (logits up to {np.abs(pair['rows']).max():.1f})")


if __name__ == "__main__":
    main()
