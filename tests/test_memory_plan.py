"""Memory plans and size estimates, held against what the converter writes and what llama.cpp allocates.

Sources of truth: the converted tiny GGUF files (every tensor's type and bytes), llama.cpp's own
log lines (KV, compute and repack buffer sizes, printed in MiB), and the peak RSS of a real run.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import pytest
from test_serve import data_uri, image_message, start_process
from typer.testing import CliRunner

import smolcli.api.model
from smolcli.api.memory import ACCEPTED_FORMS, CHAT_FIRST_MESSAGE_TOKENS, parse_size
from smolcli.api.options import LoadOptions
from smolcli.bench.plan_table import DEVICES, QUANTS
from smolcli.cli.app import app
from smolcli.cli.bench_plan import show_plan
from smolcli.convert import convert_checkpoint
from smolcli.convert.quant_layout import mmproj_layout, text_layout
from smolcli.errors import MemoryPlanRefused, SmolcliError
from smolcli.models import registry
from smolcli.models.dims import TextDims, VisionDims
from smolcli.models.smolvlm_shapes import SHAPES
from smolcli.runtime.gguf.gguf_file import read_gguf
from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.context_size import ask_context_size, chat_context_size
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.llama.quant_types import KV_CACHE_TYPES
from smolcli.runtime.planning.memory_plan import (
    TEXT_PHASE,
    VISION_PHASE,
    RunSettings,
    SharedContext,
    TextFootprint,
    VisionFootprint,
    image_tokens,
    kv_cache_bytes,
    plan_memory,
    sequence_state_bytes,
    text_compute_bytes,
    vision_compute_bytes,
)
from smolcli.runtime.vision.openvino_encoder import openvino_available
from smolcli.synthetic.random_checkpoint import write_random_checkpoint
from smolcli.util.cpu_features import native_bf16
from smolcli.util.units import size_text

from cli_checks import one_line_error

SMOLCLI = Path(sys.executable).parent / "smolcli"
MiB = 1024 * 1024
LOGGED_MIB = 0.005  # llama.cpp prints buffer sizes in MiB with two decimals
FILE_SIZE_TOLERANCE = 0.10  # file-size estimates: only the header (vocabulary, chat template) is guessed
# narrower than a K-quant super-block (256), so most rows fall back as in the 256M and 500M models
NARROW_TEXT = {
    **SHAPES["tiny"]["text"],
    "hidden_size": 192,
    "num_attention_heads": 3,
    "num_key_value_heads": 1,
    "num_hidden_layers": 8,
}
NARROW = {**SHAPES["tiny"], "text": NARROW_TEXT}


def ask(*args: str, input=None):
    return CliRunner().invoke(app, ["ask", "--threads", "1", "-ngl", "0", *args], input=input)


def file_tensors(path: Path) -> dict[str, tuple[str, int]]:
    reader = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, int(t.n_bytes)) for t in reader.tensors}


def logged_mib(log: str, pattern: str) -> float:
    match = re.search(pattern + r"\s+([\d.]+) MiB", log)
    assert match, (pattern, log[-2000:])
    return float(match.group(1))


def footprints(model: Path, mmproj: Path | None = None):
    text = TextFootprint.from_file(read_gguf(model))
    return text, VisionFootprint.from_file(read_gguf(mmproj)) if mmproj else None


# --- file sizes before the files exist ----------------------------------------------------


@pytest.mark.parametrize("quant, mmproj_type", [("F16", "F16"), ("Q4_K_M", "Q8_0"), ("Q4_0", "Q8_0"), ("Q8_0", "F16")])
def test_size_estimate_gives_every_tensor_its_real_type_and_bytes(converted, quant, mmproj_type):
    result = converted(quant, mmproj_type)
    for layout, path in (
        (text_layout(TextDims.from_config(SHAPES["tiny"]["text"]), quant), result.model),
        (mmproj_layout(VisionDims.from_shape(SHAPES["tiny"]), mmproj_type), result.mmproj),
    ):
        real = file_tensors(path)
        assert {t.name: t.qtype.name for t in layout.tensors} == {name: qtype for name, (qtype, _) in real.items()}
        assert layout.tensor_bytes == sum(nbytes for _, nbytes in real.values())
        size = path.stat().st_size
        assert layout.file_bytes >= size  # the guessed header errs high
        assert layout.file_bytes <= size * (1 + FILE_SIZE_TOLERANCE), (layout.file_bytes, size)


@pytest.fixture(scope="module")
def narrow_checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("narrow") / "ckpt", NARROW, "SmolVLM", "BF16", seed=3)


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q5_K_M", "Q6_K"])
def test_size_estimate_follows_llama_cpp_fallbacks_for_narrow_rows(narrow_checkpoint, tmp_path, quant):
    result = convert_checkpoint(narrow_checkpoint, tmp_path, quant, "F16", name="narrow", threads=1)
    layout = text_layout(TextDims.from_config(NARROW_TEXT), quant)
    real = file_tensors(result.model)
    assert result.fallbacks  # the shape does make llama.cpp fall back
    assert {t.name: t.qtype.name for t in layout.tensors} == {name: qtype for name, (qtype, _) in real.items()}
    assert layout.tensor_bytes == sum(nbytes for _, nbytes in real.values())


def test_layouts_hold_every_parameter_the_registry_counts():
    for model in registry.MODELS:
        shape = SHAPES[model.shape]
        text = text_layout(TextDims.from_config(shape["text"]), "F16")
        vision = mmproj_layout(VisionDims.from_shape(shape), "F16")
        assert sum(t.rows * t.width for t in text.tensors + vision.tensors) == model.parameters, model.name
        assert VisionDims.from_shape(shape).tokens_per_tile == model.tokens_per_tile


# --- the parts llama.cpp reports ----------------------------------------------------------


@pytest.mark.parametrize(
    "n_ctx, cache_type", [(256, "f16"), (300, "f16"), (4096, "f16"), (4096, "q8_0"), (1000, "q4_0")]
)
def test_kv_cache_and_compute_buffer_agree_with_llama_cpp(tiny_pair, n_ctx, cache_type):
    model, _ = tiny_pair
    result = ask("-m", str(model), "--ctx", str(n_ctx), "--cache-type", cache_type, "-v", "-n", "1", "hello")
    assert result.exit_code == 0, result.stderr
    dims = TextFootprint.from_file(read_gguf(model)).dims

    assert (
        abs(kv_cache_bytes(dims, n_ctx, cache_type) / MiB - logged_mib(result.stderr, "KV buffer size =")) <= LOGGED_MIB
    )
    logged = logged_mib(result.stderr, "CPU compute buffer size is")  # four decimals
    planned = (text_compute_bytes(dims, n_ctx, cache_type) - 4 * dims.n_vocab) / MiB  # less the logits output buffer
    assert logged <= planned <= logged * 1.01, (planned, logged)


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q4_0"])
def test_repacked_weights_bound_what_llama_cpp_repacks(converted, quant):
    result = converted(quant, "Q8_0")
    run = ask("-m", str(result.model), "--repack-weights", "-v", "-n", "1", "hello")
    assert run.exit_code == 0, run.stderr
    planned = plan_memory(footprints(result.model)[0], None, RunSettings(256, repack_weights=True))
    if "CPU_REPACK model buffer size" not in run.stderr:
        pytest.skip("this CPU has no repacked kernels for these types")
    assert (
        planned.part("repacked_weights").total / MiB
        >= logged_mib(run.stderr, "CPU_REPACK model buffer size =") - LOGGED_MIB
    )


def test_a_mix_the_estimate_does_not_cover_is_planned_cautiously(converted):
    result = converted("Q3_K_M", "F16")
    with pytest.raises(SmolcliError, match="no size estimate for Q3_K_M"):
        text_layout(TextDims.from_config(SHAPES["tiny"]["text"]), "Q3_K_M")
    text, _ = footprints(result.model)
    plan = plan_memory(text, None, RunSettings(256, repack_weights=True))
    size = result.model.stat().st_size
    assert plan.part("text_weights").total == size and plan.part("repacked_weights").total == size


def test_vision_compute_bounds_the_encoders_buffer(tiny_pair, images):
    model, mmproj = tiny_pair
    result = ask(
        "-m", str(model), "-i", str(images["photo"]), "-v", "-n", "1", "--no-cache", "hello", "--vision-engine", "mtmd"
    )
    assert result.exit_code == 0, result.stderr
    logged = logged_mib(result.stderr, "reserve_compute_meta: +CPU compute buffer size =")
    assert vision_compute_bytes(footprints(model, mmproj)[1].dims) / MiB >= logged - LOGGED_MIB


def ask_process(
    model: Path, images: list[Path], home: Path, *flags: str, cached: bool = False
) -> subprocess.CompletedProcess:
    """A real `smolcli ask --json` process of its own (this one holds pytest, torch and transformers); cached: the
    embedding and prefix caches on (under home)."""
    command = [str(SMOLCLI), "ask", "-m", str(model), "--json", "--threads", "1", "-ngl", "0", "-n", "4"]
    command += [arg for image in images for arg in ("-i", str(image))]
    command += [*([] if cached else ["--no-cache"]), *flags, "Compare them."]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "SMOLCLI_HOME": str(home)}
    )


def planned_run(model: Path, images: list[Path], home: Path, *flags: str) -> dict:
    run = ask_process(model, images, home, *flags)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert 0 < report["peak_memory_bytes"] <= report["memory_plan"]["total"], report["memory_plan"]
    return report


def test_a_real_run_stays_under_its_plan(tiny_pair, images, tmp_path):
    """With ONNX Runtime (auto on the CPU): the first run, which builds the ONNX file and plans it, and the next."""
    model, _ = tiny_pair
    shown = [images["photo"], images["wide"]]
    first = planned_run(model, shown, tmp_path, "--max-memory", "4G")
    second = planned_run(model, shown, tmp_path, "--max-memory", "4G")
    for report in (first, second):
        assert (report["vision_engine"], report["memory_plan"]["vision_engine"]) == ("onnx-int8", "onnx")
        # a first question: its images are encoded before the model loads, the two phases planned apart
        assert report["memory_plan"]["apart"] == [list(VISION_PHASE), list(TEXT_PHASE)]
    assert first["memory_plan"]["parts"]["vision_build"]["cpu"] > 0
    assert second["memory_plan"]["parts"]["vision_build"]["cpu"] == 0
    mtmd = planned_run(model, shown, tmp_path, "--max-memory", "4G", "--vision-engine", "mtmd")
    assert (mtmd["vision_engine"], mtmd["memory_plan"]["vision_engine"]) == ("mtmd", "mtmd")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_float_encoders_run_stays_under_its_plan(tiny_pair, images, tmp_path, precision):
    """--vision-precision fp32 and bf16 hold every vision weight in float32 (bf16: and OpenVINO's bfloat16 copy):
    planned above int8's, and a real run's peak under its plan."""
    if precision == "bf16" and not (native_bf16() and openvino_available()):
        pytest.skip("bf16 runs only on a CPU with bfloat16 instructions and openvino installed")
    model, _ = tiny_pair
    shown = [images["photo"]]
    int8 = planned_run(model, shown, tmp_path, "--max-memory", "4G")
    floats = planned_run(model, shown, tmp_path, "--max-memory", "4G", "--vision-precision", precision)
    assert floats["vision_precision"] == precision
    weights = {run["vision_precision"]: run["memory_plan"]["parts"]["vision_weights"]["cpu"] for run in (int8, floats)}
    assert weights["int8"] < weights[precision], weights


# Peak RSS of `smolcli ask --vision-precision X` on 256M's bench files and the photo, the ONNX file built: one run
# each, twice, on a shared 2-core AMD EPYC (int8 0.325 GB beside them)
MEASURED_FLOAT_PEAKS = {"fp32": 0.586e9, "bf16": 0.936e9}


@pytest.mark.parametrize("precision", MEASURED_FLOAT_PEAKS)
def test_a_float_encoders_plan_is_not_below_its_measured_peak(precision):
    from smolcli.bench.plan_table import PHOTO

    dims = VisionDims.from_shape(SHAPES["256m"])
    vision = VisionFootprint(dims, mmproj_layout(dims, "Q8_0").file_bytes)
    text = TextFootprint.from_shape(SHAPES["256m"]["text"], "Q4_K_M")
    run = RunSettings(1024, images=(PHOTO,), vision_engine="onnx", vision_first=True, vision_precision=precision)
    assert plan_memory(text, vision, run).total >= MEASURED_FLOAT_PEAKS[precision]


# Peak RSS of `smolcli ask` on the bench's files (random weights in the release shapes, Q4_K_M + Q8_0 mmproj, the
# 1024x768 photo; benchmarks/vision_memory.py, docs/benchmarks.md): the first run, which builds the ONNX file and
# self-checks its int8 graph (onnx never imported), and a later one. 256M medians of 3, 2.2B one run each, on a
# shared 2-core AMD EPYC.
MEASURED_PEAKS = {"256m": (0.332e9, 0.322e9), "2.2b": (1.628e9, 1.618e9)}


@pytest.mark.parametrize("shape", MEASURED_PEAKS)
def test_a_first_runs_plan_is_not_below_its_measured_peak(shape):
    """The plan of a first ONNX run (the build and the self-check counted) holds the peak measured on that shape,
    and its vision_build part what the first run held over a later one."""
    from smolcli.bench.plan_table import PHOTO, plan_row

    model = next(m for m in registry.MODELS if m.shape == shape)
    row = plan_row(model, "Q4_K_M")
    dims = VisionDims.from_shape(SHAPES[shape])
    vision = VisionFootprint(dims, mmproj_layout(dims, "Q8_0").file_bytes)
    run = RunSettings(row.plan.n_ctx, images=(PHOTO,), vision_engine="onnx", onnx_built=False, vision_first=True)
    first = plan_memory(TextFootprint.from_shape(SHAPES[shape]["text"], "Q4_K_M"), vision, run)
    first_peak, later_peak = MEASURED_PEAKS[shape]
    assert first.total >= first_peak, (size_text(first.total), size_text(first_peak))
    assert first.part("vision_build").total >= first_peak - later_peak


# Peak RSS of `smolcli ask -n 1 --max-memory 4G` on 256M's bench files and the photo (ONNX file built), the prefix cache
# on: the run that stores the prefix state (its entry 19.9 MB), then one that restores it; one run each, a shared 2-core
# AMD EPYC at load average 18-20. Their plan, n_ctx 1024: 411.8 MB, 23.6 MB of it the state.
MEASURED_PREFIX_PEAKS = {"store": 0.324e9, "restore": 0.258e9}


def test_a_prefix_cache_runs_plan_is_not_below_its_measured_peak():
    from smolcli.bench.plan_table import PHOTO

    dims = VisionDims.from_shape(SHAPES["256m"])
    vision = VisionFootprint(dims, mmproj_layout(dims, "Q8_0").file_bytes)
    text = TextFootprint.from_shape(SHAPES["256m"]["text"], "Q4_K_M")
    run = RunSettings(1024, images=(PHOTO,), vision_engine="onnx", vision_first=True, prefix_state=True)
    plan = plan_memory(text, vision, run)
    assert 19.9e6 <= plan.part("prefix_state").total <= 25e6  # the entry's size, for the context's 1024 cells
    assert plan.total >= max(MEASURED_PREFIX_PEAKS.values()), size_text(plan.total)


def test_auto_picks_onnx_when_its_plan_fits_and_mtmd_when_only_mtmds_does(tiny_pair, images, tmp_path):
    model, _ = tiny_pair
    shown = [images["photo"]]
    planned_run(model, shown, tmp_path, "--max-memory", "4G")  # the ONNX file built: later plans leave the build out
    sizes = {
        engine: planned_run(model, shown, tmp_path, "--max-memory", "4G", "--vision-engine", engine)["memory_plan"]
        for engine in ("onnx", "mtmd")
    }
    assert sizes["mtmd"]["total"] < sizes["onnx"]["total"]  # ONNX Runtime's libraries and session weigh more
    between = (sizes["mtmd"]["total"] + sizes["onnx"]["total"]) // 2
    roomy = planned_run(model, shown, tmp_path, "--max-memory", str(sizes["onnx"]["total"] + MiB))
    tight = planned_run(model, shown, tmp_path, "--max-memory", str(between))
    assert (roomy["vision_engine"], roomy["memory_plan"]["vision_engine"]) == ("onnx-int8", "onnx")
    assert (tight["vision_engine"], tight["memory_plan"]["vision_engine"]) == ("mtmd", "mtmd")
    assert tight["memory_plan"]["total"] == sizes["mtmd"]["total"]
    refused = ask_process(model, shown, tmp_path, "--max-memory", str(between), "--vision-engine", "onnx")
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "--vision-engine mtmd" in refused.stderr and "--max-memory" in refused.stderr


def test_encoding_first_plans_the_larger_phase_beside_the_shared_parts(tiny_pair):
    model, mmproj = tiny_pair
    text, vision = footprints(model, mmproj)
    run = RunSettings(1024, images=((1024, 768),), vision_engine="onnx")
    together = plan_memory(text, vision, run)
    apart = plan_memory(text, vision, dataclasses.replace(run, vision_first=True))
    assert together.parts == apart.parts and together.apart == ()

    def phase(plan, names):
        return sum(p.total for p in plan.parts if p.name in names)

    shared = together.total - phase(together, VISION_PHASE) - phase(together, TEXT_PHASE)
    assert apart.total == shared + max(phase(apart, VISION_PHASE), phase(apart, TEXT_PHASE)) < together.total
    mtmd = plan_memory(text, vision, dataclasses.replace(run, vision_engine="mtmd", vision_first=True))
    assert mtmd.apart == ()  # mtmd's encoder lives in the model's context: nothing to free before it loads


def test_offloading_moves_blocks_and_their_cache_to_the_gpu(tiny_pair):
    model, mmproj = tiny_pair
    text, vision = footprints(model, mmproj)
    cpu = plan_memory(text, vision, RunSettings(1024))
    half = plan_memory(text, vision, RunSettings(1024, n_gpu_layers=text.dims.n_layer // 2))
    every = plan_memory(text, vision, RunSettings(1024, n_gpu_layers=-1))
    real = file_tensors(model)
    stays = sum(nbytes for name, (_, nbytes) in real.items() if not name.startswith(("blk.", "output")))

    assert cpu.gpu == 0
    assert every.part("text_weights").cpu == model.stat().st_size - sum(n for _, n in real.values()) + stays
    assert every.part("kv_cache").cpu == 0 and every.part("kv_cache").gpu == cpu.part("kv_cache").total
    assert half.part("kv_cache").gpu == cpu.part("kv_cache").total // 2
    assert every.part("vision_weights").gpu == mmproj.stat().st_size
    assert every.part("images").gpu == 0


# --- --max-memory -------------------------------------------------------------------------


def cache_totals(model: Path, n_ctx: int, mmproj: Path | None = None, images=()) -> dict[str, int]:
    text, vision = footprints(model, mmproj)
    return {t: plan_memory(text, vision, RunSettings(n_ctx, t, images)).total for t in KV_CACHE_TYPES}


def test_max_memory_picks_the_largest_cache_type_that_fits(tiny_pair):
    model, _ = tiny_pair
    totals = cache_totals(model, 4096)
    assert totals["f16"] > totals["q8_0"] > totals["q4_0"]
    for limit, expected in (
        (totals["f16"], "f16"),
        (totals["f16"] - 1, "q8_0"),
        (totals["q8_0"], "q8_0"),
        (totals["q8_0"] - 1, "q4_0"),
    ):
        result = ask("-m", str(model), "--ctx", "4096", "--max-memory", str(limit), "--json", "-v", "-n", "2", "hello")
        assert result.exit_code == 0, result.stderr
        plan = json.loads(result.stdout)["memory_plan"]
        assert (plan["cache_type"], plan["total"], plan["limit"], plan["n_ctx"]) == (
            expected,
            totals[expected],
            limit,
            4096,
        )
        assert plan["total"] == sum(p["cpu"] + p["gpu"] for p in plan["parts"].values())
        assert f"K ({expected})" in result.stderr  # llama.cpp's cache line: the engine used that type


def test_a_chosen_cache_type_is_kept_and_checked(tiny_pair):
    model, _ = tiny_pair
    totals = cache_totals(model, 4096)
    result = ask(
        "-m",
        str(model),
        "--ctx",
        "4096",
        "--max-memory",
        str(totals["f16"]),
        "--cache-type",
        "q4_0",
        "--json",
        "-n",
        "1",
        "hi",
    )
    assert json.loads(result.stdout)["memory_plan"]["cache_type"] == "q4_0"

    refused = ask(
        "-m", str(model), "--ctx", "4096", "--max-memory", str(totals["f16"] - 1), "--cache-type", "f16", "hi"
    )
    one_line_error(refused, "f16 KV cache --cache-type asks for", "a smaller --cache-type", size_text(totals["f16"]))


def test_without_max_memory_nothing_changes(tiny_pair):
    model, _ = tiny_pair
    result = ask("-m", str(model), "--json", "-v", "-n", "1", "hi")
    assert "memory_plan" not in json.loads(result.stdout)
    assert "K (f16)" in result.stderr


def test_a_run_that_cannot_fit_stops_before_loading(tiny_pair, images, monkeypatch):
    model, mmproj = tiny_pair

    def no_engine(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(smolcli.api.model, "Engine", no_engine)
    photo = images["photo"]
    text, vision = footprints(model, mmproj)
    size = (200, 150)  # the photo fixture
    n_ctx = ask_context_size(image_tokens(vision.dims, [size]), 256, text.dims.n_ctx_train)
    smallest = plan_memory(text, vision, RunSettings(n_ctx, "q4_0", (size,)))

    started = time.perf_counter()
    result = ask("-m", str(model), "-i", str(photo), "--max-memory", "1M", "What is it?")
    line = one_line_error(
        result,
        "needs about",
        "--max-memory 1M",
        "q4_0",
        "KV cache",
        "images",
        "--max-tiles",
        "--image-size",
        "--ctx",
        "quant",
    )
    assert size_text(smallest.total) in line and size_text(1_000_000) in line
    assert f"KV cache ({n_ctx} tokens) {size_text(smallest.part('kv_cache').total)}" in line
    assert time.perf_counter() - started < 5


def test_the_tokenized_prompt_is_checked_again_before_the_context(tiny_pair):
    model, _ = tiny_pair
    text, _ = footprints(model)
    prompt = "many words in a long question " * 100
    # the images-only estimate (no images: the smallest context) fits; the real prompt's context does not
    early_ctx = ask_context_size(0, 1, text.dims.n_ctx_train)
    limit = plan_memory(text, None, RunSettings(early_ctx, "f16")).total
    result = ask("-m", str(model), "-n", "1", "--max-memory", str(limit), prompt)
    line = one_line_error(result, "needs about", "even with a q4_0 KV cache")
    planned_ctx = int(re.search(r"KV cache \((\d+) tokens\)", line).group(1))
    assert planned_ctx > early_ctx


@pytest.mark.parametrize("value", ["lots", "2X", "-1G", "0", "1.5", "GB"])
def test_a_bad_max_memory_is_one_line_naming_the_forms(tiny_pair, value):
    model, _ = tiny_pair
    one_line_error(ask("-m", str(model), "--max-memory", value, "hi"), "--max-memory", ACCEPTED_FORMS)


@pytest.mark.parametrize(
    "text, size",
    [
        ("2G", 2 * 10**9),
        ("1.5GB", 15 * 10**8),
        ("800M", 8 * 10**8),
        ("512MiB", 512 * 2**20),
        ("4 gib", 4 * 2**30),
        ("123456", 123456),
        ("100B", 100),
    ],
)
def test_sizes_read_as_written(text, size):
    assert parse_size(text) == size


def test_chat_plans_a_fixed_context(tiny_pair):
    model, mmproj = tiny_pair  # chat loads the mmproj beside the model even without images
    text, _ = footprints(model, mmproj)
    n_ctx = chat_context_size(CHAT_FIRST_MESSAGE_TOKENS, 4, text.dims.n_ctx_train)
    totals = cache_totals(model, n_ctx, mmproj)
    result = CliRunner().invoke(
        app,
        ["chat", "-m", str(model), "-t", "1", "-ngl", "0", "-n", "4", "--stats", "--max-memory", str(totals["q8_0"])],
        input="Hello there\n",
    )
    assert result.exit_code == 0, result.stderr
    stats = json.loads(result.stderr.strip().splitlines()[-1])
    assert stats["memory_plan"]["cache_type"] == "q8_0"
    assert stats["n_ctx"] == stats["memory_plan"]["n_ctx"] == n_ctx


# --- the prefix cache's state and serve --parallel's shared context ------------------------


@pytest.mark.parametrize("cache_type", ["f16", "q8_0"])
def test_a_sequence_states_size_is_planned_from_above(tiny_pair, cache_type):
    """sequence_state_bytes against llama.cpp's own state of that many cells (what the prefix cache and a
    BatchDecoder copy through a buffer)."""
    model, _ = tiny_pair
    dims = footprints(model)[0].dims
    with Engine(resolve_model_files(model, None), EngineOptions(threads=1)) as engine:
        for n_tokens in (1, 9, 200):
            context = engine.new_context(512, cache_type)
            context.decode_tokens([1 + i % 50 for i in range(n_tokens)])
            real = context.sequence_state().nbytes
            context.free()
            assert 0 <= sequence_state_bytes(dims, n_tokens, cache_type) - real <= 64, (n_tokens, real)


def test_a_batch_decoders_context_agrees_with_llama_cpp(tiny_pair, capfd):
    """serve --parallel's shared context: its KV cache and compute buffer as llama.cpp's log gives them."""
    model, _ = tiny_pair
    dims = footprints(model)[0].dims
    with smolcli.load(model, threads=1, verbose=True) as loaded:
        capfd.readouterr()
        loaded.batch_decoder(4, n_ctx=4096)
        log = capfd.readouterr().err
    assert abs(kv_cache_bytes(dims, 4096, "f16") / MiB - logged_mib(log, "KV buffer size =")) <= LOGGED_MIB
    logged = logged_mib(log, "CPU compute buffer size =")
    planned = (text_compute_bytes(dims, 4096, "f16", 4, n_ubatch=4) - 4 * dims.n_vocab) / MiB
    assert abs(planned - logged) <= LOGGED_MIB, (planned, logged)
    assert logged_mib(log, "CPU  output buffer size =") <= 4 * 4 * dims.n_vocab / MiB + LOGGED_MIB


def test_the_prefix_state_is_planned_where_the_prefix_cache_works(tiny_pair):
    model, mmproj = tiny_pair
    text, vision = footprints(model, mmproj)
    run = RunSettings(1024, images=((1024, 768),), vision_engine="onnx", prefix_state=True)
    plan = plan_memory(text, vision, run)
    assert plan.part("prefix_state").cpu == sequence_state_bytes(text.dims, 1024, "f16") > 0
    assert plan.total == plan_memory(text, vision, dataclasses.replace(run, prefix_state=False)).total + (
        plan.part("prefix_state").cpu
    )
    # where PrefixReuse does not apply: mtmd's own prompts, layers on a GPU, no image
    for elsewhere in (
        dataclasses.replace(run, vision_engine="mtmd"),
        dataclasses.replace(run, n_gpu_layers=-1),
        dataclasses.replace(run, images=()),
    ):
        assert plan_memory(text, vision, elsewhere).part("prefix_state").total == 0
    # the state sits beside the language model's parts, not the encoder's
    apart = plan_memory(text, vision, dataclasses.replace(run, vision_first=True))
    assert "prefix_state" in apart.apart[1]


def test_a_real_run_with_the_prefix_cache_stays_under_its_plan(tiny_pair, images, tmp_path):
    """The prefix cache on: the first run stores the prompt's prefix state, the second restores it; both peaks
    under plans that count the state."""
    model, _ = tiny_pair
    home = tmp_path / "home"
    shown = [images["photo"], images["wide"]]
    reports = []
    for _ in range(2):
        run = ask_process(model, shown, home, "--max-memory", "4G", cached=True)
        assert run.returncode == 0, run.stderr
        reports.append(json.loads(run.stdout))
    stored, restored = reports
    assert len(list((home / "prefixes").glob("*.kv"))) == 1
    assert stored["usage"]["images_encoded"] > 0 and restored["usage"]["images_encoded"] == 0  # read from the state
    for report in reports:
        plan = report["memory_plan"]
        assert plan["parts"]["prefix_state"]["cpu"] > 0
        assert 0 < report["peak_memory_bytes"] <= plan["total"], plan


def tiny_budget_model(tiny_pair, max_memory: str | int, **settings) -> smolcli.api.model.Model:
    model, mmproj = tiny_pair
    options = LoadOptions(mmproj=str(mmproj), max_memory=max_memory, threads=2, **settings)
    return smolcli.api.model.Model.open(model, options)


def test_parallel_decoding_is_planned_and_rises_with_the_conversations(tiny_pair):
    model, mmproj = tiny_pair
    text, vision = footprints(model, mmproj)
    totals = []
    for n_seq in (2, 3, 4, 8):
        shared = SharedContext(n_seq, n_seq * 2048, "f16", 2048)
        plan = plan_memory(text, vision, RunSettings(2048, shared_contexts=(shared,)))
        alone = plan_memory(text, vision, RunSettings(2048))
        # the decoder's own cells, and n_seq - 1 more conversations' contexts beside the run's
        assert plan.part("shared_contexts").cpu > (2 * n_seq - 1) * kv_cache_bytes(text.dims, 2048, "f16")
        assert plan.total == alone.total + plan.part("shared_contexts").cpu
        totals.append(plan.total)
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    opened = tiny_budget_model(tiny_pair, "8G")
    checked = [opened.check_parallel(n).total for n in (2, 3, 4)]
    assert checked == sorted(checked) and len(set(checked)) == 3
    assert opened.check_parallel(1) is None and not opened.loaded  # planned before anything loads
    # a decoder made: every later plan of the model counts its context, a question's and a conversation's
    shared = opened.check_parallel(2).part("shared_contexts").cpu
    with opened:
        decoder = opened.batch_decoder(2)
        answer = opened.ask("Hello", max_tokens=1)
        assert answer.memory_plan["parts"]["shared_contexts"]["cpu"] == shared
        assert opened.chat(max_tokens=1).memory_plan["parts"]["shared_contexts"]["cpu"] == shared
        decoder.close()
        assert opened.ask("Hello", max_tokens=1).memory_plan["parts"]["shared_contexts"]["cpu"] == 0


def test_parallel_plans_each_running_conversation_in_the_context_its_chat_has(tiny_pair):
    """serve --parallel answers each request in a Chat of its own (4096 cells unless --ctx) and decodes it in the
    decoder's pool (2048 each): the plan counts the run's and the others' contexts at the Chat's size, the pool at
    its own."""
    model, mmproj = tiny_pair
    text, vision = footprints(model, mmproj)
    pool_only = SharedContext(4, 4 * 2048, "f16", 2048)
    in_chats = SharedContext(4, 4 * 2048, "f16", 2048, 4096)
    parts = [
        plan_memory(text, vision, RunSettings(4096, shared_contexts=(s,))).part("shared_contexts").cpu
        for s in (pool_only, in_chats)
    ]
    assert parts[1] - parts[0] >= 3 * (kv_cache_bytes(text.dims, 4096, "f16") - kv_cache_bytes(text.dims, 2048, "f16"))
    opened = tiny_budget_model(tiny_pair, "8G")
    plan = opened.check_parallel(4)
    with opened:
        chat = opened.chat(max_tokens=1)
        chat.send("Hello")
        assert plan.n_ctx == chat.n_ctx  # the run's own conversation: the context its Chat really has
        decoder = opened.batch_decoder(4)
        assert decoder.shared.n_ctx == 4 * 2048  # the pool: 2048 cells each
        decoder.close()
    sized = tiny_budget_model(tiny_pair, "8G", ctx=1024).check_parallel(4)
    assert sized.n_ctx == 1024  # --ctx sizes both


def refused_serve(tiny_pair, limit: int, *options: str) -> str:
    """`smolcli serve` under --max-memory limit (f16 cache, ONNX encoder: nothing smaller to fall back on): its one
    line of refusal, given before it listens."""
    model, mmproj = tiny_pair
    result = subprocess.run(
        [str(SMOLCLI), "serve", "-m", str(model), "--mmproj", str(mmproj), "--port", "0", *options]
        + ["--max-memory", str(limit), "--cache-type", "f16", "--vision-engine", "onnx", "--threads", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "listening" not in result.stderr
    return result.stderr


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    finally:
        process.kill()


def test_serve_refuses_a_parallel_that_does_not_fit_naming_what_does(tiny_pair):
    fixed = {"cache_type": "f16", "vision_engine": "onnx"}  # no smaller cache or encoder to fall back on
    plans = {n: tiny_budget_model(tiny_pair, "8G", **fixed).check_parallel(n).total for n in (2, 3, 4)}
    limit = (plans[3] + plans[4]) // 2
    with pytest.raises(MemoryPlanRefused, match="parallel=3 fits") as refused:
        tiny_budget_model(tiny_pair, limit, **fixed).check_parallel(4)
    assert refused.value.fits == 3 and refused.value.plan.total == plans[4]
    # one at a time fits where two do not
    with pytest.raises(MemoryPlanRefused, match=r"answering one at a time \(no parallel=\) fits"):
        tiny_budget_model(tiny_pair, plans[2] - 1, **fixed).check_parallel(2)
    # the command line: one line, before the weights load (no llama.cpp context made); with one conversation kept
    kept = {n: tiny_budget_model(tiny_pair, "8G", **fixed).check_parallel(n, 1).total for n in (3, 4)}
    refusal = refused_serve(tiny_pair, (kept[3] + kept[4]) // 2, "--parallel", "4", "--conversations", "1")
    assert "--parallel 4 needs about" in refusal and "--parallel 3 fits" in refusal and "--max-memory" in refusal


def test_serve_parallel_two_stays_under_its_plan(tiny_pair, tmp_path):
    """A real server with --parallel 2 answering two conversations at once: its peak under the plan of two
    conversations decoded together (the decoder's context and both conversations' own)."""
    model, mmproj = tiny_pair
    plan = tiny_budget_model(tiny_pair, "8G").check_parallel(2)
    log = tmp_path / "serve.log"
    process, running = start_process(
        model, tmp_path, log, "--mmproj", str(mmproj), "--parallel", "2", "--max-memory", "8G"
    )
    try:
        client = running.client(timeout=120)
        options = {"max_tokens": 48, "temperature": 0, "extra_body": {"ignore_eos": True}}

        def ask_server(question: str) -> str:
            messages = [{"role": "user", "content": question}]
            return client.chat.completions.create(model="m", messages=messages, **options).choices[0].message.content

        before = running.metrics()
        with ThreadPoolExecutor(2) as pool:
            assert all(pool.map(ask_server, ["Describe a cat.", "Describe a dog."]))
        after = running.metrics()
        assert (
            after["smolcli_batch_tokens_total"] - before["smolcli_batch_tokens_total"]
            > after["smolcli_batch_steps_total"] - before["smolcli_batch_steps_total"]
        )  # decoded together
        peak = int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{process.pid}/status").read_text()).group(1)) * 1024
        assert 0 < peak <= plan.total, (size_text(peak), size_text(plan.total))
    finally:
        stop_server(process)


# --- serve --conversations: the conversations kept between requests ---------------------


def rss_bytes(pid: int | str = "self", field: str = "VmRSS") -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024


def test_kept_conversations_are_planned_as_their_parked_states(tiny_pair, images):
    model, mmproj = tiny_pair
    text, vision = footprints(model, mmproj)
    alone = plan_memory(text, vision, RunSettings(2048))
    plan = plan_memory(text, vision, RunSettings(2048, kept_states=5 * MiB))
    assert plan.part("kept_conversations").cpu == 5 * MiB and plan.total == alone.total + 5 * MiB
    assert "kept_conversations" in TEXT_PHASE
    offloaded = plan_memory(text, vision, RunSettings(2048, n_gpu_layers=-1, kept_states=5 * MiB))
    assert offloaded.part("kept_conversations").cpu == 5 * MiB  # a saved state is in host memory, offloaded or not
    opened = tiny_budget_model(tiny_pair, "8G")
    full = sequence_state_bytes(text.dims, opened.pair.chat_cells, "f16")  # one of a Chat's whole context
    assert opened.check_parallel(1) is None
    assert opened.check_parallel(1, 4).part("kept_conversations").cpu == 4 * full
    together = opened.check_parallel(2, 4)
    assert together.total == opened.check_parallel(2).total + 4 * full
    assert not opened.loaded  # planned before anything loads
    with opened:
        assert opened.keep_conversations(3) == 3 * full  # the byte budget serve holds its parked states to
        chat = opened.chat(max_tokens=1)
        chat.send("Hello", images=[images["photo"]])
        parked = chat.park()
        assert 0 < parked < full
        # every later plan counts what is parked now
        assert opened.ask("Hello", max_tokens=1).memory_plan["parts"]["kept_conversations"]["cpu"] == parked
        assert opened.chat(max_tokens=1).memory_plan["parts"]["kept_conversations"]["cpu"] == parked
        chat.close()
        assert opened.ask("Hello", max_tokens=1).memory_plan["parts"]["kept_conversations"]["cpu"] == 0
    assert smolcli.load(model, mmproj=mmproj, threads=1).keep_conversations(4) is None  # no limit: no byte budget


def test_a_parked_conversation_costs_its_state_not_its_context(tiny_pair, images):
    """What each conversation kept parked adds to the process: about its saved state, far less than an idle context.
    The tiny model's contexts are small enough to come from malloc's heap, whose free pages it keeps: trimmed before
    each reading (the real shapes' contexts are mapped and returned at once: 256M, 1065 tokens, 23.4 MiB a parked
    conversation against 104 MiB an idle one)."""
    model, _ = tiny_pair
    dims = footprints(model)[0].dims
    libc = ctypes.CDLL(None)

    def live() -> int:
        libc.malloc_trim(0)
        return rss_bytes()

    with smolcli.load(model, threads=1) as loaded:
        cells = loaded.pair.chat_cells
        for _ in range(2):  # the images' first encoding, and a first park and restore, out of the way
            warm = loaded.chat(max_tokens=2)
            warm.send("Describe it.", images=[images["photo"], images["wide"]])
            warm.park()
            warm.send("And?")
            warm.close()
        kept, growth, states = [], [], []
        for _ in range(4):
            before = live()
            chat = loaded.chat(max_tokens=2)
            chat.send("Describe it.", images=[images["photo"], images["wide"]])
            states.append(chat.park())
            growth.append(live() - before)
            kept.append(chat)
        assert [chat.n_ctx for chat in kept] == [cells] * 4  # restored to the size it had
        assert loaded.pair.parked_bytes() == sum(states)
    each = sorted(growth)[len(growth) // 2]
    idle = kv_cache_bytes(dims, cells, "f16")  # what an idle context held at least
    assert each <= max(states) + 256 * 1024 < idle, (size_text(each), size_text(max(states)), growth)


def test_kept_conversations_never_refuse_serve_they_are_held_to_what_is_left(tiny_pair):
    fixed = {"cache_type": "f16", "vision_engine": "onnx"}  # no smaller cache or encoder to fall back on
    alone = tiny_budget_model(tiny_pair, "8G", **fixed).check_parallel(1, 1)
    kept = alone.part("kept_conversations").total
    limit = alone.total - kept + kept // 2  # room for half of one full conversation's state
    opened = tiny_budget_model(tiny_pair, limit, **fixed)
    plan = opened.check_parallel(1, 4)
    assert plan.total == limit and plan.part("kept_conversations").total == kept // 2
    with pytest.raises(MemoryPlanRefused):  # beside --parallel 2 even the conversations do not fit: its own refusal
        tiny_budget_model(tiny_pair, alone.total - kept, **fixed).check_parallel(2, 4)


def test_serve_keeping_four_conversations_stays_under_its_plan(tiny_pair, images, tmp_path):
    """Four conversations about images, all kept (the first is continued, not replayed): the server's peak under the
    plan it printed, which lists them."""
    model, mmproj = tiny_pair
    plan = tiny_budget_model(tiny_pair, "8G").check_parallel(1, 4)
    log = tmp_path / "serve.log"
    process, running = start_process(
        model, tmp_path, log, "--mmproj", str(mmproj), "--conversations", "4", "--max-memory", "8G"
    )
    try:
        client = running.client(timeout=120)
        firsts = []
        for key in ("photo", "wide", "tall", "square"):
            messages = [image_message(data_uri(images[key]), f"Describe the {key} picture.")]
            answer = client.chat.completions.create(model="m", messages=messages, max_tokens=4, temperature=0)
            firsts.append(messages + [{"role": "assistant", "content": answer.choices[0].message.content}])
        follow_up = firsts[0] + [{"role": "user", "content": "And its colours?"}]
        again = client.chat.completions.create(model="m", messages=follow_up, max_tokens=4, temperature=0)
        assert again.model_extra["smolcli"]["conversation"] == "continued"  # the first of four was still kept
        peak = rss_bytes(process.pid, "VmHWM")
        assert 0 < peak <= plan.total, (size_text(peak), size_text(plan.total))
        printed = next(line for line in log.read_text().splitlines() if "memory plan" in line)
        assert f"kept conversations {size_text(plan.part('kept_conversations').total)}" in printed
    finally:
        stop_server(process)


def test_serve_drops_the_least_recently_used_parked_conversation_to_stay_within_max_memory(tiny_pair, images, tmp_path):
    """--max-memory leaving room for one parked conversation's state: the second conversation pushes the first out
    (its follow-up is replayed), the second's follow-up is continued, and the parked bytes stay within the budget."""
    model, mmproj = tiny_pair
    fixed = {"cache_type": "f16", "vision_engine": "onnx"}
    with_one = tiny_budget_model(tiny_pair, "8G", **fixed).check_parallel(1, 1)
    limit = with_one.total - with_one.part("kept_conversations").total + 100_000  # one photo conversation: ~80 kB
    log = tmp_path / "serve.log"
    options = ("--mmproj", str(mmproj), "--conversations", "4", "--max-memory", str(limit), "--cache-type", "f16")
    process, running = start_process(model, tmp_path, log, *options, "--vision-engine", "onnx")
    try:
        client = running.client(timeout=120)
        firsts = []
        for key in ("photo", "wide"):
            messages = [image_message(data_uri(images[key]), f"Describe the {key} picture.")]
            answer = client.chat.completions.create(model="m", messages=messages, max_tokens=4, temperature=0)
            firsts.append(messages + [{"role": "assistant", "content": answer.choices[0].message.content}])
            metrics = running.metrics()
            assert metrics["smolcli_conversations_kept"] == 1  # the budget holds one
            assert metrics["smolcli_conversations_parked_bytes"] <= 100_000  # the last one stays unparked till the next
        follow_ups = [first + [{"role": "user", "content": "And its colours?"}] for first in firsts]
        second = client.chat.completions.create(model="m", messages=follow_ups[1], max_tokens=4, temperature=0)
        assert second.model_extra["smolcli"]["conversation"] == "continued"  # the last one was kept
        first = client.chat.completions.create(model="m", messages=follow_ups[0], max_tokens=4, temperature=0)
        assert first.model_extra["smolcli"]["conversation"] == "replayed"  # pushed out by the second
        printed = next(line for line in log.read_text().splitlines() if "memory plan" in line)
        assert "kept conversations 97.7 KiB" in printed  # the byte budget: what the limit leaves
        assert 0 < rss_bytes(process.pid, "VmHWM") <= limit
    finally:
        stop_server(process)


# --- the plan table -----------------------------------------------------------------------


def test_plan_covers_every_registry_model(capsys):
    show_plan(as_json=True)
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["quant"]) for r in rows] == [(m.name, q) for m in registry.MODELS for q in QUANTS]
    for row in rows:
        model = registry.find(row["model"])
        shape = SHAPES[model.shape]
        assert row["model_bytes"] == text_layout(TextDims.from_config(shape["text"]), row["quant"]).file_bytes
        assert row["mmproj_bytes"] == mmproj_layout(VisionDims.from_shape(shape), "Q8_0").file_bytes
        assert row["peak_bytes"] == sum(row["parts"].values())
        assert row["image_chunks"] * model.tokens_per_tile < row["prompt_tokens"]
        assert row["prompt_tokens"] + row["answer_tokens"] <= row["n_ctx"]  # the context holds the photo and the answer
        assert [d["name"] for d in row["devices"]] == [d.name for d in DEVICES]
        for device in row["devices"]:
            assert device["fits"] == (device["peak_bytes"] <= device["usable_bytes"])
        dims = TextDims.from_config(shape["text"])
        assert row["prefix_state_bytes"] == sequence_state_bytes(dims, row["prompt_tokens"], "f16")
        parallel = row["parallel_bytes"]
        assert 0 < parallel["2"] < parallel["4"]  # more conversations decoded together, more memory
        # the pool's 4 x 2048 cells, and the three other conversations' own contexts at a Chat's 4096
        assert parallel["4"] > 4 * kv_cache_bytes(dims, 2048, "f16") + 3 * kv_cache_bytes(dims, 4096, "f16")
        # the photo conversation parked as its saved state, up to one of a Chat's whole 4096 positions
        assert row["kept_conversation_bytes"] == sequence_state_bytes(dims, row["prompt_tokens"] + 256, "f16")
        assert row["kept_conversation_full_bytes"] == sequence_state_bytes(dims, 4096, "f16")
    photo_256m = next(r for r in rows if r["model"] == "smolvlm-256m")
    assert 19e6 < photo_256m["prefix_state_bytes"] < 23e6  # about 20 MB for the 13-tile photo
    for model in registry.MODELS:
        sizes = [r for r in rows if r["model"] == model.name]
        assert sizes[0]["model_bytes"] < sizes[1]["model_bytes"] < sizes[2]["model_bytes"]  # Q4_K_M < Q8_0 < F16
        assert sizes[0]["peak_bytes"] < sizes[1]["peak_bytes"] < sizes[2]["peak_bytes"]


def test_plan_table_names_every_model_and_machine(capsys):
    show_plan(as_json=False)
    out = capsys.readouterr().out
    for model in registry.MODELS:
        assert re.search(rf"^{re.escape(model.name)} +Q4_K_M ", out, re.MULTILINE), model.name
    for device in DEVICES:
        assert device.name in out
    assert "1.5 GB for the OS" in out
    assert "+par 4" in out and "serve --parallel N" in out and "prefix state" in out
