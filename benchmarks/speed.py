"""One answer about one image, side by side: transformers fp32, `smolcli ask`, and raw llama-cpp-python.

    python benchmarks/speed.py                           # SmolVLM-256M shapes, 32 tokens, 2 threads
    python benchmarks/speed.py --shape 2.2b --tokens 16 --write-docs

The same real-shaped random checkpoint (bf16 safetensors, cached in --workdir with its GGUF pair),
the same 1024x768 photo-like PNG and the same prompt for all three; exactly --tokens new tokens each,
greedy (transformers: min_new_tokens = max_new_tokens; smolcli: --ignore-eos; direct: argmax loop).

  transformers  AutoModelForImageTextToText in float32 + Idefics3Processor: how one ran SmolVLM before
  smolcli       `smolcli ask --json --no-cache --ignore-eos` on the GGUF pair (--quant, --mmproj-type)
  direct        the same GGUF pair through llama-cpp-python's C bindings alone: mtmd_tokenize,
                mtmd_helper_eval_chunks' loop (its encoder timed apart), then llama_decode with an argmax;
                same threads, same context size and batch sizes as smolcli picks. smolcli / direct is
                smolcli's own overhead. (benchmarks/peers.py sets these beside OpenVINO.)

Each run is a cold answer in a fresh process (imports, load, image, prompt, answer), timed from
outside; each process reports its own peak RSS (VmHWM). With --repeats R > 1 every runner runs R
times (interleaved) and the table shows medians, the ratios the median of each repeat's ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import TORCHVISION_SHIM, run_fresh  # benchmarks/measure.py, beside this script
from PIL import Image

from smolcli.synthetic.images import photo_like

QUESTION = "What is in this image?"
RUNNERS = ("transformers", "smolcli", "direct")

TRANSFORMERS = r"""
import json, sys, time, warnings
started = time.perf_counter()
checkpoint, image_path, prompt, n_tokens, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoTokenizer, Idefics3Processor, LogitsProcessor, LogitsProcessorList
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
torch.set_num_threads(threads)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    # SmolVLM2's own processor needs torchvision (for video); its image prompt is Idefics3's.
    seq_len = json.load(open(f"{checkpoint}/processor_config.json"))["image_seq_len"]
    processor = Idefics3Processor(image_processor=Idefics3ImageProcessorPil.from_pretrained(checkpoint),
                                  tokenizer=tokenizer, image_seq_len=seq_len)
encoder = []  # [start, end] of each vision pass: the vision tower, then the connector that maps it to text width
model.model.vision_model.register_forward_pre_hook(lambda *_: encoder.append([time.perf_counter(), None]))
model.model.connector.register_forward_hook(lambda *_: encoder[-1].__setitem__(1, time.perf_counter()))
loaded = time.perf_counter()
inputs = processor(text=prompt, images=[Image.open(image_path)], return_tensors="pt")
stamps = []
class Stamp(LogitsProcessor):  # called once per new token, after the forward pass that gave its logits
    def __call__(self, input_ids, scores):
        stamps.append(time.perf_counter())
        return scores
generating = time.perf_counter()
with torch.no_grad(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    output = model.generate(**inputs, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False,
                            logits_processor=LogitsProcessorList([Stamp()]), pad_token_id=tokenizer.eos_token_id)
done = time.perf_counter()
new = output[0, inputs["input_ids"].shape[1]:].tolist()
print(json.dumps({
    "load_s": loaded - started, "preprocess_s": generating - loaded,
    "prefill_s": stamps[0] - generating,  # vision encoder and prompt: the first forward pass
    "image_encode_s": sum(end - start for start, end in encoder),
    "decode_s": done - stamps[0], "decoded_tokens": len(new) - 1,
    "prompt_tokens": inputs["input_ids"].shape[1], "new_tokens": len(new),
    "text": tokenizer.decode(new), "peak_rss_bytes": peak_rss(),
}))
"""

# `smolcli ask` as a user runs it; the figures line comes after its --json report, on exit.
SMOLCLI = r"""
import json, sys
sys.argv = ["smolcli", *sys.argv[1:]]
from smolcli.cli.app import main
try:
    main()
except SystemExit as stop:
    if stop.code:
        raise
print()
print(json.dumps({"peak_rss_bytes": peak_rss()}))
"""

DIRECT = r"""
import ctypes, json, sys, time
started = time.perf_counter()
model_path, mmproj_path, image_path, prompt = sys.argv[1:5]
n_tokens, threads = int(sys.argv[5]), int(sys.argv[6])
import numpy as np
import llama_cpp
from llama_cpp import mtmd_cpp as mtmd
from smolcli.runtime.llama.context_size import ask_context_size  # arithmetic only: the context smolcli would ask for
import logging
from llama_cpp import _logger  # llama-cpp-python's own log route, silenced as smolcli silences it
_logger.logger.setLevel(logging.CRITICAL + 1)
mtmd.mtmd_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
mtmd.mtmd_helper_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
llama_cpp.llama_backend_init()
model_params = llama_cpp.llama_model_default_params()
model_params.use_extra_bufts = False  # as smolcli loads it: no repacked copy of the weights
model = llama_cpp.llama_model_load_from_file(model_path.encode(), model_params)
mparams = mtmd.mtmd_context_params_default()
mparams.use_gpu, mparams.print_timings, mparams.warmup, mparams.n_threads = False, False, False, threads
mctx = mtmd.mtmd_init_from_file(mmproj_path.encode(), model, mparams)
vocab = llama_cpp.llama_model_get_vocab(model)
n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
bitmap = mtmd.mtmd_helper_bitmap_init_from_file(mctx, image_path.encode(), False)
chunks = mtmd.mtmd_input_chunks_init()
text = prompt.replace("<image>", mtmd.mtmd_default_marker().decode()).encode()
inp = mtmd.mtmd_input_text(text, len(text), False, True)
assert mtmd.mtmd_tokenize(mctx, chunks, ctypes.byref(inp), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
prompt_tokens = int(mtmd.mtmd_helper_get_n_tokens(chunks))
params = llama_cpp.llama_context_default_params()
params.n_ctx = ask_context_size(prompt_tokens, n_tokens, llama_cpp.llama_model_n_ctx_train(model))
params.n_batch, params.n_ubatch = min(2048, params.n_ctx), min(512, params.n_ctx)
params.n_threads = params.n_threads_batch = threads
ctx = llama_cpp.llama_init_from_model(model, params)
loaded = time.perf_counter()
# mtmd_helper_eval_chunks' own loop, with the encoder timed apart: an image chunk is encoded (mtmd_encode_chunk),
# then its embeddings decoded; a text chunk is decoded; logits for the last chunk only.
n_past, new_n_past, encode_s = 0, llama_cpp.llama_pos(0), 0.0
n_chunks = mtmd.mtmd_input_chunks_size(chunks)
for index in range(n_chunks):
    chunk = mtmd.mtmd_input_chunks_get(chunks, index)
    if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
        assert mtmd.mtmd_helper_eval_chunk_single(mctx, ctx, chunk, n_past, 0, params.n_batch, index == n_chunks - 1,
                                                  ctypes.byref(new_n_past)) == 0
    else:
        encoding = time.perf_counter()
        assert mtmd.mtmd_encode_chunk(mctx, chunk) == 0
        encode_s += time.perf_counter() - encoding
        assert mtmd.mtmd_helper_decode_image_chunk(mctx, ctx, chunk, mtmd.mtmd_get_output_embd(mctx), n_past, 0,
                                                   params.n_batch, ctypes.byref(new_n_past),
                                                   mtmd.mtmd_helper_post_decode_callback(), None) == 0
    n_past = new_n_past.value
prefilled = time.perf_counter()
pieces, buffer = b"", ctypes.create_string_buffer(256)
for _ in range(n_tokens):
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
    token = int(np.argmax(logits))
    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, 256, 0, False)
    pieces += buffer.raw[:size]
    batch = llama_cpp.llama_batch_get_one((llama_cpp.llama_token * 1)(token), 1)
    assert llama_cpp.llama_decode(ctx, batch) == 0
done = time.perf_counter()
print(json.dumps({
    "load_s": loaded - started, "prefill_s": prefilled - loaded, "image_encode_s": encode_s,
    "decode_s": done - prefilled, "decoded_tokens": n_tokens, "prompt_tokens": prompt_tokens, "n_ctx": params.n_ctx,
    "text": pieces.decode("utf-8", errors="replace").removeprefix(" "), "peak_rss_bytes": peak_rss(),
}))
"""


def prepared(workdir: Path, shape: str, quant: str, mmproj_type: str) -> tuple[Path, Path, Path]:
    """The random checkpoint and its GGUF pair, made once and kept in workdir."""
    from smolcli.convert import convert_checkpoint
    from smolcli.synthetic.random_checkpoint import write_random_checkpoint

    source = workdir / f"random-{shape}-BF16"
    if not (source / "model.safetensors").exists():
        started = time.perf_counter()
        write_random_checkpoint(source, shape, "SmolVLM", "BF16")
        print(f"wrote random checkpoint {source} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    out = workdir / f"gguf-{shape}"
    name = f"bench-{shape}"
    model, mmproj = out / f"{name}-{quant}.gguf", out / f"mmproj-{name}-{mmproj_type}.gguf"
    if not (model.exists() and mmproj.exists()):
        started = time.perf_counter()
        result = convert_checkpoint(source, out, quant, mmproj_type, name=name)
        model, mmproj = result.model, result.mmproj
        print(f"converted to {model.name} + {mmproj.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return source, model, mmproj


def run_transformers(checkpoint: Path, image: Path, prompt: str, tokens: int, threads: int) -> dict:
    return run_fresh(TORCHVISION_SHIM + TRANSFORMERS, [str(checkpoint), str(image), prompt, str(tokens), str(threads)])


BUILD_ONNX = r"""
import json, sys
from pathlib import Path
from smolcli.runtime.vision.onnx_vision import build_or_reuse, onnxruntime_available
if onnxruntime_available():
    build_or_reuse(Path(sys.argv[1]), "int8")
print(json.dumps({}))
"""


def prepare_onnx(mmproj: Path, home: Path) -> None:
    """The ONNX encoder smolcli's CPU path uses, built outside the timing, as a first run on a machine leaves it
    (conversion is not timed either); the embedding cache stays off (--no-cache)."""
    run_fresh(BUILD_ONNX, [str(mmproj)], env={**os.environ, "SMOLCLI_HOME": str(home)})


def run_smolcli(model: Path, mmproj: Path, image: Path, tokens: int, threads: int, home: Path) -> dict:
    args = [
        "ask",
        "-m",
        str(model),
        "--mmproj",
        str(mmproj),
        "-i",
        str(image),
        "--json",
        "--ignore-eos",
        "-n",
        str(tokens),
        "--threads",
        str(threads),
        "--no-cache",
        QUESTION,
    ]
    figures = run_fresh(SMOLCLI, args, env={**os.environ, "SMOLCLI_HOME": str(home)})
    report = json.loads(figures.pop("output"))
    timings = report["timings"]
    figures.update(
        load_s=timings["load_s"],
        image_encode_s=timings["image_encode_s"],
        prefill_s=timings["image_encode_s"] + timings["prefill_s"],
        decode_s=timings["decode_s"],
        decoded_tokens=report["usage"]["completion_tokens"],
        prompt_tokens=report["usage"]["prompt_tokens"],
        text=report["text"],
        timings=timings,
        vision_engine=report.get("vision_engine"),
    )
    return figures


def run_direct(model: Path, mmproj: Path, image: Path, prompt: str, tokens: int, threads: int) -> dict:
    return run_fresh(DIRECT, [str(model), str(mmproj), str(image), prompt, str(tokens), str(threads)])


def median_run(runs: list[dict]) -> dict:
    """Per-key medians of the numeric figures; the rest from the first run."""
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(run[key] for run in runs)
    return merged


def ratios(repeats: list[dict[str, dict]]) -> dict[str, float]:
    def median_of(top: str, bottom: str, key: str) -> float:
        return statistics.median(r[top][key] / r[bottom][key] for r in repeats)

    return {
        "smolcli_over_transformers_wall": median_of("smolcli", "transformers", "wall_s"),
        "smolcli_over_transformers_peak_rss": median_of("smolcli", "transformers", "peak_rss_bytes"),
        "smolcli_over_direct_wall": median_of("smolcli", "direct", "wall_s"),
        "smolcli_over_direct_peak_rss": median_of("smolcli", "direct", "peak_rss_bytes"),
    }


def seconds(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(results: dict[str, dict], labels: dict[str, str]) -> list[str]:
    lines = [
        "| runner | wall s | load s | image + prompt s | decode s | other s | decode tok/s | peak RSS GB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for runner in RUNNERS:
        r = results[runner]
        per_second = r["decoded_tokens"] / r["decode_s"] if r["decode_s"] > 0 else 0.0
        other = r["wall_s"] - r["load_s"] - r["prefill_s"] - r["decode_s"]
        lines.append(
            f"| {labels[runner]}{f' [{engine}]' if (engine := r.get('vision_engine')) else ''} | {seconds(r['wall_s'])} | {seconds(r['load_s'])} | {seconds(r['prefill_s'])} | "
            f"{seconds(r['decode_s'])} | {seconds(other)} | {per_second:.1f} | {r['peak_rss_bytes'] / 1e9:.2f} |"
        )
    return lines


def ratio_lines(figures: dict[str, float]) -> list[str]:
    return [
        f"smolcli / transformers: {figures['smolcli_over_transformers_wall']:.2f}x the time, "
        f"{figures['smolcli_over_transformers_peak_rss']:.2f}x the peak memory",
        f"smolcli / direct llama-cpp-python: {figures['smolcli_over_direct_wall']:.2f}x the time, "
        f"{figures['smolcli_over_direct_peak_rss']:.2f}x the peak memory",
    ]


def machine() -> dict:
    model_name = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model_name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": model_name, "cores": os.cpu_count(), "ram_bytes": ram}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("smolcli", "llama_cpp_python", "transformers", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


PANELS = (
    ("wall time of a cold answer (s)", "wall_s", 1.0, "{:.1f} s"),
    ("peak RSS (GB)", "peak_rss_bytes", 1e-9, "{:.2f} GB"),
)
COLOURS = {"transformers": (222, 120, 60), "smolcli": (50, 110, 190), "direct": (120, 120, 120)}


def draw_chart(
    results: dict[str, dict],
    labels: dict[str, str],
    title: str,
    path: Path,
    runners: tuple[str, ...] = RUNNERS,
    panels: tuple[tuple[str, str, float, str], ...] = PANELS,
    colours: dict[str, tuple[int, int, int]] = COLOURS,
) -> None:
    """Panels of horizontal bars, one bar per runner, with Pillow alone.

    Each panel is (heading, key in a runner's results, scale, value format); a runner whose value is None
    gets no bar and "-"."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    width, left, bar, gap, panel_top = 860, 220, 26, 10, 50
    panel_height = 40 + len(runners) * (bar + gap)
    image = Image.new("RGB", (width, panel_top + len(panels) * (panel_height + 20)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((12, 14), title, fill="black", font=font)
    y = panel_top
    for heading, key, scale, fmt in panels:
        draw.text((12, y), heading, fill="black", font=font)
        y += 24
        values = {r: None if results[r].get(key) is None else results[r][key] * scale for r in runners}
        biggest = max((v for v in values.values() if v is not None), default=0.0) or 1.0
        for runner in runners:
            value = values[runner]
            draw.text((12, y + 7), labels[runner], fill="black", font=font)
            if value is None:
                draw.text((left + 8, y + 7), "-", fill="black", font=font)
            else:
                length = int((width - left - 110) * value / biggest)
                draw.rectangle([left, y, left + max(length, 1), y + bar], fill=colours[runner])
                draw.text((left + length + 8, y + 7), fmt.format(value), fill="black", font=font)
            y += bar + gap
        y += 36
    image.save(path)


SHAPES = ("tiny", "256m", "500m", "2.2b")
PAGE_HEAD = """# Speed and memory: transformers, smolcli, raw llama-cpp-python

Written by `benchmarks/speed.py --write-docs`, one section per --shape; a rerun replaces its own section.

Each row is one cold answer in a fresh process: *wall* from outside (interpreter start to exit, imports
included), the next three from inside it. *load* is imports plus weights for transformers and the
direct loop, the `--json` load_s for smolcli (model, mmproj and context only); *image + prompt* is the
vision encoder and the prompt's forward pass; *decode* the remaining tokens one at a time (transformers:
after its first forward pass). *other* is wall minus those three: interpreter start, imports not
counted above, reading the files, image preprocessing. Peak RSS is each process's own VmHWM. The
weights are random, so the answers are gibberish; the shapes, and so the work, are real.
"""
SECTION = re.compile(r"<!-- shape (\S+) -->\n.*?<!-- /shape -->\n", re.S)


def write_docs(
    docs: Path,
    shape: str,
    command: str,
    host: dict,
    packages: dict,
    setup: str,
    lines: list[str],
    ratio_text: list[str],
    results: dict[str, dict],
    labels: dict[str, str],
) -> Path:
    """docs/benchmarks.md (this shape's section replaced, the others kept) and this shape's bar chart."""
    docs.mkdir(parents=True, exist_ok=True)
    chart = docs / ("benchmarks.png" if shape == "256m" else f"benchmarks-{shape}.png")
    draw_chart(results, labels, setup, chart)
    body = [
        f"## SmolVLM {shape} shapes",
        "",
        f"- machine: {host['cpu']}, {host['cores']} cores, {host['ram_bytes'] / 2**30:.0f} GiB RAM "
        "(shared with other jobs: compare rows of one run, not runs)",
        f"- versions: {', '.join(f'{k} {v}' for k, v in packages.items())}",
        f"- command: `{command}`",
        f"- setup: {setup}",
        "",
        *lines,
        "",
        *[f"- {line}" for line in ratio_text],
        "",
        f"![time and peak memory per runner, {shape}]({chart.name})",
        "",
    ]
    page = docs / "benchmarks.md"
    section = f"<!-- shape {shape} -->\n" + "\n".join(body) + "<!-- /shape -->\n"
    page.write_text(with_shape_section(page.read_text() if page.exists() else "", shape, section))
    return chart


def with_shape_section(page: str, shape: str, section: str) -> str:
    """The page with this shape's section replaced, or put among the others in SHAPES order.

    Everything else on the page (the measurements written by hand around these sections) stays as it is.
    """
    sections = {m.group(1): m for m in SECTION.finditer(page)}
    if shape in sections:
        old = sections[shape]
        return page[: old.start()] + section + page[old.end() :]
    if not sections:
        return (page or PAGE_HEAD) + "\n" + section
    after = [name for name in SHAPES[SHAPES.index(shape) + 1 :] if name in sections]
    at = sections[after[0]].start() if after else max(m.end() for m in sections.values())
    joiner = "" if after else "\n"
    return page[:at] + joiner + section + ("\n" if after else "") + page[at:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="256m", choices=SHAPES)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per answer, forced (default 32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per runner; medians when more than 1")
    parser.add_argument("--quant", default="Q4_K_M")
    parser.add_argument("--mmproj-type", default="Q8_0")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path.home() / ".cache" / "smolcli" / "bench",
        help="where the random checkpoint and its GGUF pair are kept between runs",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write this shape's section of docs/benchmarks.md and its bar chart "
        "(docs/benchmarks.png for 256m, docs/benchmarks-SHAPE.png for the others)",
    )
    args = parser.parse_args()
    if args.tokens < 2 or args.repeats < 1 or args.threads < 1:
        parser.error("--tokens must be at least 2, --repeats and --threads at least 1")

    from smolcli.runtime.chat.prompting import first_turn, place_images

    checkpoint, model, mmproj = prepared(args.workdir, args.shape, args.quant, args.mmproj_type)
    prompt = first_turn(place_images(QUESTION, 1))  # what smolcli ask builds from QUESTION and one image
    labels = {
        "transformers": "transformers fp32",
        "smolcli": f"smolcli {args.quant} + {args.mmproj_type}",
        "direct": f"direct llama-cpp-python {args.quant}",
    }
    repeats: list[dict[str, dict]] = []
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "photo.png"  # lossless: Pillow (smolcli) and stb (direct) decode the same pixels
        photo_like(1024, 768).save(image)
        prepare_onnx(mmproj, Path(scratch) / "home")
        for index in range(args.repeats):
            runs = {
                "transformers": run_transformers(checkpoint, image, prompt, args.tokens, args.threads),
                "smolcli": run_smolcli(model, mmproj, image, args.tokens, args.threads, Path(scratch) / "home"),
                "direct": run_direct(model, mmproj, image, prompt, args.tokens, args.threads),
            }
            for runner, run in runs.items():
                run.pop("output", None)
                print(
                    f"repeat {index + 1}/{args.repeats} {runner}: {run['wall_s']:.1f} s, "
                    f"{run['peak_rss_bytes'] / 1e9:.2f} GB",
                    file=sys.stderr,
                )
            repeats.append(runs)

    results = {runner: median_run([r[runner] for r in repeats]) for runner in RUNNERS}
    figures = ratios(repeats)
    same_text = all(r["smolcli"]["text"] == r["direct"]["text"] for r in repeats)
    setup = (
        f"random SmolVLM {args.shape} shapes, 1024x768 image, {int(results['smolcli']['prompt_tokens'])}-token prompt, "
        f"{args.tokens} new tokens, {args.threads} threads, median of {args.repeats}"
    )
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    host, packages = machine(), versions()
    lines = table(results, labels)
    ratio_text = ratio_lines(figures)
    if not same_text:
        ratio_text.append("note: smolcli's and the direct loop's answers differ (they should match token for token)")

    if args.json:
        print(
            json.dumps(
                {
                    "machine": host,
                    "versions": packages,
                    "command": command,
                    "setup": setup,
                    "shape": args.shape,
                    "tokens": args.tokens,
                    "threads": args.threads,
                    "repeats": args.repeats,
                    "quant": args.quant,
                    "mmproj_type": args.mmproj_type,
                    "model": str(model),
                    "mmproj": str(mmproj),
                    "results": results,
                    "runs": repeats,
                    "ratios": figures,
                    "smolcli_matches_direct": same_text,
                },
                indent=2,
            )
        )
    else:
        print(setup)
        print("\n".join(lines))
        print("\n".join(ratio_text))
    if args.write_docs:
        docs = Path(__file__).resolve().parent.parent / "docs"
        chart = write_docs(docs, args.shape, command, host, packages, setup, lines, ratio_text, results, labels)
        print(f"wrote {docs / 'benchmarks.md'} and {chart}", file=sys.stderr)


if __name__ == "__main__":
    main()
