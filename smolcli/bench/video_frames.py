"""`smolcli bench --video`: a generated clip's frames through each vision encoder, in frames per second.

The clip (an 8 s 640x360 H.264 MP4, made once under $SMOLCLI_HOME/bench) is planned and decoded
as `ask --video` does (the release's 1 frame a second, each frame resized to one tile's square).
Then every frame's global view is encoded:
- mtmd: the way `ask --video --vision-engine mtmd` encodes frames, the frame's global-view chunk through the
  one-tile mtmd context (runtime.video_prompt.FrameVision), the embedding cache off;
- ONNX Runtime: the same frame's pixel values (one tile, rescaled and normalized as
  image_preprocess does) run directly through OnnxVisionEncoder's session, fp32 and int8, built from
  the same mmproj outside the timing (kept in $SMOLCLI_HOME/bench/onnx-vision): the session run that
  `ask --video` makes per frame on the ONNX engine (OnnxVisionEncoder.frame_embeddings), without the decode into llama.cpp.
Engines are interleaved, `repeats` passes each; the figure is the median pass's frames per second.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from smolcli.api.video import video_sampling
from smolcli.bench.files import Report, bench_folder, prepare_files
from smolcli.bench.runs import BenchOptions, check_options, machine
from smolcli.doctor.system_info import versions
from smolcli.runtime.gguf.gguf_file import read_gguf
from smolcli.runtime.video.clip import open_clip
from smolcli.runtime.vision.images import RGBImage
from smolcli.synthetic.clips import write_clip
from smolcli.util.report import quiet

CLIP_SECONDS, CLIP_FPS, CLIP_WIDTH, CLIP_HEIGHT = 8, 10, 640, 360


@dataclass(frozen=True)
class VideoBenchOptions:
    shape: str = "256m"
    quant: str = "Q4_K_M"
    mmproj_type: str = "Q8_0"
    threads: int | None = None
    repeats: int = 3
    onnx: bool = True  # also ONNX Runtime (fp32 and int8), when onnxruntime is installed


def clip_path() -> Path:
    return bench_folder() / f"clip-{CLIP_WIDTH}x{CLIP_HEIGHT}-{CLIP_SECONDS}s-{CLIP_FPS}fps.mp4"


def _mtmd_pass(engine, vision, frames: list[RGBImage]) -> float:
    """Seconds to encode every frame's global view through mtmd."""
    seconds = 0.0
    for frame in frames:
        prompt = vision.tokenize(engine, frame)
        try:
            index = [i for i, chunk in enumerate(prompt.chunks) if chunk.kind == "image"][-1]
            chunk = prompt.mtmd_chunk(index)
            started = time.perf_counter()
            engine.images.encode_mtmd(chunk, None, vision.ctx)
            seconds += time.perf_counter() - started
        finally:
            prompt.free()
    return seconds


def _onnx_pass(session, pixels: list) -> float:
    started = time.perf_counter()
    for values in pixels:
        session.run(None, {"pixel_values": values})
    return time.perf_counter() - started


def _frame_pixels(frames: list[RGBImage], mmproj) -> list:
    """Each frame as one normalized tile, float32 [1, 3, tile, tile]: the global view's pixel values."""
    from smolcli.runtime.vision.image_preprocess import pixel_values

    meta = mmproj.metadata
    tile = int(meta["clip.vision.image_size"])
    mean, std = list(meta["clip.vision.image_mean"]), list(meta["clip.vision.image_std"])
    return [pixel_values(frame, tile, tile, mean, std) for frame in frames]


def run_video_bench(options: VideoBenchOptions, report: Report = quiet) -> dict:
    from smolcli.runtime.gguf.model_files import resolve_model_files
    from smolcli.runtime.llama.engine import Engine, EngineOptions
    from smolcli.runtime.video.video_prompt import FrameVision
    from smolcli.runtime.vision.onnx_vision import OnnxVisionEncoder, onnxruntime_available

    checked = check_options(
        BenchOptions(
            shape=options.shape,
            quant=options.quant,
            mmproj_type=options.mmproj_type,
            threads=options.threads,
            repeats=options.repeats,
        )
    )
    shape, threads = checked.shape, checked.threads
    files, _ = prepare_files(shape, options.quant, options.mmproj_type, threads, report)
    clip_file = clip_path()
    if not clip_file.is_file():
        report(f"writing a {CLIP_SECONDS} s {CLIP_WIDTH}x{CLIP_HEIGHT} clip to {clip_file} (once)")
        write_clip(clip_file, CLIP_SECONDS, CLIP_FPS, CLIP_WIDTH, CLIP_HEIGHT)
    mmproj = read_gguf(files.mmproj)
    sampling = video_sampling(mmproj, None, None)
    started = time.perf_counter()
    with open_clip(clip_file) as clip:
        plan = clip.plan(sampling)
        frames = [frame.image for frame in clip.frames(plan, sampling)]
    decode_seconds = time.perf_counter() - started

    passes: dict[str, list[float]] = {"mtmd": []}
    sessions = {}
    if options.onnx and onnxruntime_available():
        pixels = _frame_pixels(frames, mmproj)
        for precision in ("fp32", "int8"):
            report(f"building the ONNX {precision} encoder from {files.mmproj.name} (outside the timing)")
            encoder = OnnxVisionEncoder(threads, precision, folder=bench_folder() / "onnx-vision")
            sessions[f"onnx-{precision}"] = encoder.session_for(mmproj)
            passes[f"onnx-{precision}"] = []
    engine = Engine(resolve_model_files(files.model, files.mmproj), EngineOptions(threads=threads))
    vision = FrameVision(engine, mmproj)
    try:
        _mtmd_pass(engine, vision, frames[:1])  # warm-up: mtmd's first encode allocates its buffers
        for session in sessions.values():
            _onnx_pass(session, pixels[:1])
        for index in range(checked.repeats):
            for name in passes:
                report(f"pass {index + 1}/{checked.repeats} ({name}): {len(frames)} frames ...")
                seconds = _mtmd_pass(engine, vision, frames) if name == "mtmd" else _onnx_pass(sessions[name], pixels)
                passes[name].append(seconds)
    finally:
        vision.close()
        engine.close()

    engines = []
    for name, seconds in passes.items():
        median = statistics.median(seconds)
        engines.append(
            {
                "engine": name,
                "what": "frame global views through mtmd's one-tile context"
                if name == "mtmd"
                else "frame pixel values straight through OnnxVisionEncoder's session",
                "frames": len(frames),
                "seconds": seconds,
                "median_s": median,
                "frames_per_s": len(frames) / median,
                "s_per_frame": median / len(frames),
            }
        )
    return {
        "shape": shape,
        "quant": options.quant,
        "mmproj_type": options.mmproj_type,
        "mmproj": str(files.mmproj),
        "threads": threads,
        "repeats": checked.repeats,
        "clip": {
            "path": str(clip_file),
            "seconds": CLIP_SECONDS,
            "fps": CLIP_FPS,
            "width": CLIP_WIDTH,
            "height": CLIP_HEIGHT,
            "frames_sampled": len(frames),
            "frame_size": sampling.frame_size,
            "decode_s": decode_seconds,
        },
        "machine": machine(threads),
        "versions": versions(),
        "engines": engines,
    }


def video_table_lines(result: dict) -> list[str]:
    clip, host = result["clip"], result["machine"]
    lines = [
        f"SmolVLM {result['shape']} shapes (random weights), mmproj {result['mmproj_type']}: "
        f"a {clip['seconds']} s {clip['width']}x{clip['height']} clip, {clip['frames_sampled']} frames sampled "
        f"(decoded and resized in {clip['decode_s']:.2f} s), each one {clip['frame_size']} px global view; "
        f"{result['threads']} threads, median of {result['repeats']} passes",
        f"machine: {host['cpu']}, {host['cores']} cores",
        "",
        "| engine | frames/s | s/frame | what is timed |",
        "| --- | --- | --- | --- |",
    ]
    for row in result["engines"]:
        lines.append(f"| {row['engine']} | {row['frames_per_s']:.2f} | {row['s_per_frame']:.4f} | {row['what']} |")
    return lines
