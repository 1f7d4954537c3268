"""`smolcli bench` on the tiny shape: real builds, real `smolcli ask` processes, the figures they report."""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smolcli.bench.plan_table import DEVICES, PARALLEL, QUANTS
from smolcli.cli.app import app
from smolcli.models.registry import MODELS
from smolcli.models.smolvlm_shapes import SHAPES, image_seq_len
from smolcli.runtime.vision.image_tiles import tile_grid

from cli_checks import one_line_error

TINY = ["--shape", "tiny", "--repeats", "1", "--tokens", "4", "--threads", "1"]
TILE = SHAPES["tiny"]["vision"]["image_size"]  # 48 px
EDGE = SHAPES["tiny"]["longest_edge"]  # 96 px
WIDTH, HEIGHT = 1024, 768


def bench(*args: str):
    return CliRunner().invoke(app, ["bench", *args])


def pair_files(home):
    folder = home / "bench" / "tiny" / "Q4_K_M-mmproj-Q8_0"
    return folder, folder / "bench-tiny-Q4_K_M.gguf", folder / "mmproj-bench-tiny-Q8_0.gguf"


def test_each_setting_is_measured_and_the_pair_is_built_once(private_smolcli_home):
    result = bench(*TINY, "--max-tiles", "4", "--image-size", "144", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {row["setting"]: row for row in report["settings"]}
    assert list(rows) == ["default", "--max-tiles 4", "--image-size 144"]

    assert rows["default"]["longest_edge"] == EDGE
    assert rows["default"]["tiles"] == tile_grid(WIDTH, HEIGHT, EDGE, TILE).encodes  # + the global view
    assert rows["--image-size 144"]["longest_edge"] == 144
    assert rows["--image-size 144"]["tiles"] == tile_grid(WIDTH, HEIGHT, 144, TILE).encodes
    assert rows["--image-size 144"]["tiles"] > rows["default"]["tiles"]
    assert rows["--max-tiles 4"]["tiles"] - 1 <= 4
    for name, row in rows.items():
        assert row["tiles"] == tile_grid(WIDTH, HEIGHT, row["longest_edge"], TILE).encodes, name
        assert row["image_tokens"] == row["tiles"] * image_seq_len(SHAPES["tiny"]), name
        assert row["completion_tokens"] == 4, name
        assert len(row["runs"]) == 1, name
        for key in (
            "load_s",
            "encode_s",
            "encode_s_per_tile",
            "prefill_s",
            "decode_s",
            "prefill_tokens_per_s",
            "decode_tokens_per_s",
            "time_to_first_token_s",
            "wall_s",
            "encoder_gflops",
        ):
            assert row[key] > 0, (name, key, row[key])
        assert row["peak_rss_bytes"] > 0, name
        assert row["time_to_first_token_s"] == pytest.approx(row["load_s"] + row["encode_s"] + row["prefill_s"])
        # what the process timed inside itself fits in its wall time seen from outside
        assert row["wall_s"] > row["time_to_first_token_s"] + row["decode_s"], name
    assert report["machine"]["threads"] == 1
    assert report["versions"]["llama-cpp-python"] == version("llama-cpp-python")
    reference = report["encoder"]["matmul_reference"]
    assert reference is not None and reference["gflops"] > 0 and reference["threads"] == 1
    assert rows["default"]["encoder_fraction_of_reference"] == pytest.approx(
        rows["default"]["encoder_gflops"] / reference["gflops"]
    )
    assert "converting" in result.stderr  # progress on stderr, built this time
    assert report["reused_files"] is False

    folder, model, mmproj = pair_files(private_smolcli_home)
    stamps = {path: path.stat().st_mtime_ns for path in (model, mmproj)}
    again = bench(*TINY)  # the table this time
    assert again.exit_code == 0, again.output
    assert "converting" not in again.stderr and "reusing" in again.stderr
    assert {path: path.stat().st_mtime_ns for path in (model, mmproj)} == stamps
    assert f"| default | {EDGE} | {tile_grid(WIDTH, HEIGHT, EDGE, TILE).encodes} | " in again.stdout
    assert "encoder throughput" in again.stdout and "reference:" in again.stdout
    assert not list(folder.parent.glob(".building-*"))


def test_a_failed_build_leaves_nothing_that_is_reused(private_smolcli_home, monkeypatch):
    import smolcli.convert

    real_convert = smolcli.convert.convert_checkpoint

    def disk_fills_up(source, outdir, *args, **kwargs):
        (outdir / "bench-tiny-Q4_K_M.gguf").write_bytes(b"GGUF half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    # a build killed earlier: its staging folder, of a process that is gone, must be cleared away
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = private_smolcli_home / "bench" / "tiny" / f".building-{int(gone.stdout)}-x"
    abandoned.mkdir(parents=True)
    (abandoned / "complete.json").write_text("{}")

    monkeypatch.setattr(smolcli.convert, "convert_checkpoint", disk_fills_up)
    result = bench(*TINY)
    one_line_error(result, "filled up", "SMOLCLI_HOME", after_progress=True)
    folder, model, _ = pair_files(private_smolcli_home)
    assert not folder.exists()
    assert not list(folder.parent.glob(".building-*"))

    monkeypatch.setattr(smolcli.convert, "convert_checkpoint", real_convert)
    rerun = bench(*TINY, "--json")
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout)["reused_files"] is False
    assert model.stat().st_size > 1000


@pytest.mark.parametrize(
    "args,words",
    [
        (["--shape", "3b"], ["'3b'", "256m", "2.2b"]),
        ([*TINY, "--repeats", "0"], ["--repeats", "at least 1"]),
        ([*TINY, "--quant", "Q5_X"], ["Q5_X", "Q4_K_M"]),
        (
            [*TINY, "--max-tiles", "3"],
            ["--max-tiles 3", f"--max-tiles {tile_grid(WIDTH, HEIGHT, 2 * TILE, TILE).tiles} or more"],
        ),
    ],
)
def test_bad_options_are_one_line_errors_before_anything_is_built(args, words, private_smolcli_home):
    one_line_error(bench(*args), *words)
    assert not (private_smolcli_home / "bench").exists()


@pytest.mark.reference
def test_encoder_flops_are_what_torch_counts():
    import warnings

    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    from smolcli.bench.encoder_throughput import encoder_flops_per_tile
    from smolcli.synthetic.random_checkpoint import config_files

    config = config_files(SHAPES["tiny"], "SmolVLM", "F32")["config.json"]
    config.pop("architectures")
    config = Idefics3Config(**config)
    config._attn_implementation = config.vision_config._attn_implementation = (
        "eager"  # attention as matmuls, which it counts
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Idefics3ForConditionalGeneration(config).eval()
    pixels = torch.randn(1, 1, 3, TILE, TILE)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.model.get_image_features(pixel_values=pixels)
    assert encoder_flops_per_tile("tiny") == counter.get_total_flops()


def test_plan_shows_the_plan_and_builds_nothing(private_smolcli_home, monkeypatch):
    import smolcli.bench.runs
    import smolcli.convert

    def must_not_run(*args, **kwargs):
        raise AssertionError("bench --plan built or measured something")

    monkeypatch.setattr(smolcli.convert, "convert_checkpoint", must_not_run)
    monkeypatch.setattr(smolcli.bench.runs, "run_bench", must_not_run)
    result = bench("--plan")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("model "))
    columns = ["model", "quant", "LM file", "mmproj", "chunks", "n_ctx", "peak", *(d.label for d in DEVICES), "state"]
    columns += [*(f"+par {n}" for n in PARALLEL), "+kept 1"]
    assert re.fullmatch(r"\s+".join(map(re.escape, columns)), header.strip()), header
    assert "Jetson" in columns
    table = lines[lines.index(header) + 1 :]
    rows = [line.split() for line in table[: table.index("")]]
    assert [(row[0], row[1]) for row in rows] == [(m.name, q) for m in MODELS for q in QUANTS]
    sizes = 2 * (2 + len(PARALLEL))  # the state's, each +par column's and +kept's size, as number and unit
    for row in rows:
        assert set(row[-len(DEVICES) - sizes : -sizes]) <= {"yes", "no"}, row  # one fits column per machine
    for device in DEVICES:
        assert f"  {device.label}: {device.name}, " in result.stdout

    as_json = bench("--plan", "--json")
    assert as_json.exit_code == 0, as_json.output
    plan = json.loads(as_json.stdout)
    assert [(row["model"], row["quant"]) for row in plan] == [(m.name, q) for m in MODELS for q in QUANTS]
    assert all([d["name"] for d in row["devices"]] == [d.name for d in DEVICES] for row in plan)
    assert not (private_smolcli_home / "bench").exists()
    assert list(private_smolcli_home.iterdir()) == []  # nothing written anywhere under SMOLCLI_HOME


def test_bench_video_measures_frames_per_second_for_each_engine(private_smolcli_home):
    result = bench("--video", "--shape", "tiny", "--repeats", "2", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout is the JSON alone; progress went to stderr
    assert "pass 1/2 (mtmd)" in result.stderr
    clip = report["clip"]
    assert clip["frames_sampled"] == 8 and clip["frame_size"] == TILE  # 8 s at the release's 1 frame a second
    assert (private_smolcli_home / "bench" / Path(clip["path"]).name).is_file()
    engines = {row["engine"]: row for row in report["engines"]}
    assert list(engines) == ["mtmd", "onnx-fp32", "onnx-int8"]
    for name, row in engines.items():
        assert row["frames"] == 8 and len(row["seconds"]) == 2, name
        assert row["frames_per_s"] == pytest.approx(8 / row["median_s"]) and row["frames_per_s"] > 0, name
    table = bench("--video", "--shape", "tiny", "--repeats", "1", "--threads", "1")
    assert table.exit_code == 0, table.output
    assert "| mtmd |" in table.stdout and "| onnx-int8 |" in table.stdout and "8 frames sampled" in table.stdout
    assert "writing a" not in table.stderr  # the clip is made once
