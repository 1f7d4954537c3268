"""benchmarks/peers.py's arguments, figures and table on given numbers, and benchmarks/gpu_check.sh's refusal on a
machine without an NVIDIA GPU: the parts that run without OpenVINO, a model or a GPU."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def peers():
    sys.path.insert(0, str(BENCHMARKS))  # peers.py imports its neighbours (measure, speed, openvino_peer)
    try:
        spec = importlib.util.spec_from_file_location("bench_peers", BENCHMARKS / "peers.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_defaults_are_the_issues_setup(peers):
    args = peers.parse_args([])
    assert (args.shape, args.tokens, args.threads, args.repeats) == ("256m", 32, 2, 3)
    assert (args.quant, args.mmproj_type) == ("Q4_K_M", "Q8_0")
    assert args.runners == ("smolcli", "openvino", "mtmd", "transformers")
    assert args.openvino_venv == Path.home() / ".cache" / "smolcli-bench" / "openvino-venv"
    assert not args.json and args.chart is None


def test_a_subset_of_runners_keeps_smolcli_and_the_fixed_order(peers, tmp_path):
    args = peers.parse_args(
        ["--runners", "transformers,openvino", "--shape", "2.2b", "--chart", str(tmp_path / "c.png")]
    )
    assert args.runners == ("smolcli", "openvino", "transformers")
    assert args.shape == "2.2b"


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--repeats", "0"], "--repeats"),
        (["--tokens", "1"], "--tokens"),
        (["--runners", "smolcli,vllm"], "vllm"),
        (["--chart", "chart.jpg"], "PNG"),
        (["--shape", "7b"], "--shape"),
    ],
)
def test_bad_arguments_stop_with_one_message_naming_them(peers, capsys, argv, named):
    with pytest.raises(SystemExit) as stop:
        peers.parse_args(argv)
    assert stop.value.code == 2
    assert named in capsys.readouterr().err.splitlines()[-1]


def raw(wall, encode, prefill_with_encode, decode_s, tokens, rss_gb, prompt=889):
    """One run's figures as the runners report them (prefill_s holds the encoder, as in speed.py)."""
    return {
        "wall_s": wall,
        "image_encode_s": encode,
        "prefill_s": prefill_with_encode,
        "decode_s": decode_s,
        "decoded_tokens": tokens,
        "peak_rss_bytes": rss_gb * 1e9,
        "prompt_tokens": prompt,
    }


def test_table_and_ratios_from_given_numbers(peers):
    runs = [
        {
            "smolcli": raw(10.0, 7.0, 9.0, 0.32, 32, 0.3),
            "openvino": raw(20.0, 7.0, 8.0, 0.62, 31, 2.0),
            "transformers": raw(40.0, None, 20.0, 3.1, 31, 1.5),
        },
        {
            "smolcli": raw(12.0, 8.0, 10.0, 0.32, 32, 0.3),
            "openvino": raw(16.0, 8.0, 9.0, 0.62, 31, 2.0),
            "transformers": raw(30.0, None, 20.0, 3.1, 31, 1.5),
        },
    ]
    repeats = [{runner: peers.phases(figures) for runner, figures in run.items()} for run in runs]
    results = {runner: peers.median_phases([r[runner] for r in repeats]) for runner in runs[0]}
    figures = peers.ratios(repeats, ("openvino", "transformers"))

    assert results["smolcli"]["wall_s"] == 11.0
    assert results["smolcli"]["prefill_s"] == pytest.approx(2.0)  # prefill without the encoder
    assert results["openvino"]["decode_tokens_per_s"] == pytest.approx(50.0)
    assert results["transformers"]["encoder_s"] is None and results["transformers"]["prefill_s"] is None
    # each repeat's ratio, then their median: 10/20 and 12/16
    assert figures["openvino"]["wall_s"] == pytest.approx((0.5 + 0.75) / 2)
    assert figures["openvino"]["decode_s_per_token"] == pytest.approx(0.5)
    assert figures["transformers"]["encoder_s"] is None

    args = peers.parse_args(["--runners", "openvino,transformers"])
    labels = peers.labels_for(args, ("openvino 2026.4.1", "bf16"))
    lines = peers.table(results, labels, figures)
    assert lines[0] == "| runner | whole s | encoder s | prefill s | decode tok/s | peak RSS GB | prompt tokens |"
    assert lines[2] == "| smolcli Q4_K_M + Q8_0 | 11.00 | 7.50 | 2.00 | 100.0 | 0.30 | 889 |"
    assert lines[3] == "| OpenVINO int8 IR (openvino 2026.4.1, bf16) | 18.00 | 7.50 | 1.00 | 50.0 | 2.00 | 889 |"
    assert lines[4] == "| transformers fp32 | 35.00 | - | - | 10.0 | 1.50 | 889 |"
    assert lines[6] == "| smolcli / peer | whole | encoder | prefill | decode s/token | peak RSS |"
    assert lines[8] == "| / OpenVINO int8 IR (openvino 2026.4.1, bf16) | 0.62x | 1.00x | 2.00x | 0.50x | 0.15x |"
    assert lines[9] == "| / transformers fp32 | 0.33x | - | - | 0.10x | 0.20x |"


def test_header_names_the_cpu_flags_that_decide_openvinos_precision(peers):
    host = {"cpu": "AMD EPYC", "cores": 2, "flags": {"avx512_vnni": True, "avx512_bf16": True, "amx_bf16": False}}
    header = peers.header_lines({**host, "load_average": (3.25, 1, 1), "load_average_end": (4.0, 1, 1)}, "setup line")
    assert header == [
        "CPU: AMD EPYC, 2 cores (avx512_vnni yes, avx512_bf16 yes, amx_bf16 no); load average 3.2 at the start, "
        "4.0 at the end",
        "setup line",
    ]
    facts = peers.cpu_facts()
    assert set(facts["flags"]) == set(peers.CPU_FLAGS) and facts["cpu"]


def test_chart_has_a_panel_per_figure_and_a_dash_for_a_missing_one(peers, tmp_path):
    results = {
        "smolcli": peers.phases(raw(10.0, 7.0, 9.0, 0.32, 32, 0.3)),
        "transformers": peers.phases(raw(40.0, None, 20.0, 3.1, 31, 1.5)),
    }
    chart = tmp_path / "peers.png"
    runners = ("smolcli", "transformers")
    peers.draw_chart(results, peers.CHART_LABELS, "title", chart, runners, peers.CHART_PANELS, peers.COLOURS)
    with Image.open(chart) as image:
        assert image.format == "PNG"
        assert image.height == 50 + len(peers.CHART_PANELS) * (40 + len(runners) * 36 + 20)
        # the first panel's first bar (smolcli, 10 of 40 s) is drawn in smolcli's colour
        assert image.getpixel((225, 50 + 24 + 10)) == peers.COLOURS["smolcli"]


def run_gpu_check(tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    bash = shutil.which("bash")
    return subprocess.run(
        [bash, str(BENCHMARKS / "gpu_check.sh"), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"HOME": str(tmp_path), **env},
    )


def test_gpu_check_refuses_in_one_line_without_nvidia_smi(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    done = run_gpu_check(tmp_path, {"PATH": str(empty)})
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "gpu_check: no nvidia-smi: this check needs a machine with an NVIDIA GPU and its driver (nothing was run)"
    ]
    assert not (tmp_path / "work").exists()


def test_gpu_check_refuses_in_one_line_without_nvcc(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "nvidia-smi"  # a driver that lists a GPU, but no CUDA toolkit to build with
    fake.write_text("#!/bin/sh\necho 'GPU 0: stand-in'\n")
    fake.chmod(0o755)
    done = run_gpu_check(tmp_path, {"PATH": str(tools), "CUDACXX": str(tmp_path / "no-such-nvcc")})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "gpu_check: no nvcc (CUDA toolkit): put it on PATH or set CUDACXX to it; nothing was run"
    ]
    assert not (tmp_path / "work").exists()


def test_an_earlier_json_report_prints_its_table_and_chart_without_measuring(peers, tmp_path, capsys):
    repeats = [
        {
            "smolcli": peers.phases(raw(10.0, 7.0, 9.0, 0.32, 32, 0.3)),
            "mtmd": peers.phases(raw(30.0, 20.0, 25.0, 0.64, 32, 0.4)),
        }
    ]
    results = {runner: peers.median_phases([r[runner] for r in repeats]) for runner in repeats[0]}
    args = peers.parse_args(["--runners", "mtmd"])
    host = {"cpu": "AMD EPYC", "cores": 2, "flags": {"avx512_bf16": True}, "load_average": [2.0, 1, 1]}
    report = {
        "machine": host,
        "setup": "random SmolVLM 256m shapes",
        "labels": peers.labels_for(args),
        "results": results,
        "ratios": peers.ratios(repeats, ("mtmd",)),
    }
    saved, chart = tmp_path / "report.json", tmp_path / "chart.png"
    saved.write_text(json.dumps(report))

    peers.main(["--from-json", str(saved), "--chart", str(chart)])
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["CPU: AMD EPYC, 2 cores (avx512_bf16 yes); load average 2.0 at the start", report["setup"], ""]
    assert "| llama.cpp mtmd Q4_K_M + Q8_0 | 30.00 | 20.00 | 5.00 | 50.0 | 0.40 | 889 |" in out
    assert "| / llama.cpp mtmd Q4_K_M + Q8_0 | 0.33x | 0.35x | 0.40x | 0.50x | 0.75x |" in out
    with Image.open(chart) as image:
        assert image.height == 50 + len(peers.CHART_PANELS) * (40 + 2 * 36 + 20)


def test_a_file_that_is_no_report_stops_with_one_line(peers, tmp_path):
    not_a_report = tmp_path / "bench.json"
    not_a_report.write_text('{"settings": []}')
    with pytest.raises(SystemExit) as stop:
        peers.main(["--from-json", str(not_a_report)])
    assert str(stop.value) == (
        f"error: {not_a_report} is not a report of `peers.py --json`; run the benchmark with --json > FILE first"
    )


@pytest.fixture(scope="module")
def openvino_peer(peers):
    return sys.modules["openvino_peer"]  # imported by peers.py from benchmarks/


def stand_in_venv(folder: Path, exit_code: int = 0) -> Path:
    """A venv folder whose optimum-cli writes one file into its last argument (the export's folder) and counts its
    calls: the caching around the export, without OpenVINO."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    cli = bin_dir / "optimum-cli"
    cli.write_text(
        '#!/bin/sh\nfor last; do :; done\nmkdir -p "$last" && echo ir > "$last/openvino_language_model.xml"\n'
        f'echo call >> "{folder}/calls"\nexit {exit_code}\n'
    )
    cli.chmod(0o755)
    return bin_dir / "python"


def test_the_export_is_made_once_and_renamed_into_place_whole(openvino_peer, tmp_path):
    python = stand_in_venv(tmp_path / "venv")
    out = tmp_path / "bench" / "openvino-int8"
    assert openvino_peer.exported(python, tmp_path / "checkpoint", out, log=lambda m: None) == out
    assert (out / "openvino_language_model.xml").read_text() == "ir\n"
    marker = json.loads((out / openvino_peer.EXPORT_MARKER).read_text())
    assert marker == {"checkpoint": str(tmp_path / "checkpoint"), "packages": list(openvino_peer.PACKAGES)}
    assert sorted(p.name for p in out.parent.iterdir()) == ["openvino-int8"]  # no stage left beside it
    openvino_peer.exported(python, tmp_path / "checkpoint", out, log=lambda m: None)
    assert (tmp_path / "venv" / "calls").read_text() == "call\n"  # reused, not exported again
    # another checkpoint in the same place: exported again
    openvino_peer.exported(python, tmp_path / "other", out, log=lambda m: None)
    assert (tmp_path / "venv" / "calls").read_text() == "call\ncall\n"


def test_a_failed_export_leaves_nothing_that_looks_whole(openvino_peer, tmp_path):
    python = stand_in_venv(tmp_path / "venv", exit_code=1)
    out = tmp_path / "bench" / "openvino-int8"
    with pytest.raises(SystemExit) as stop:
        openvino_peer.exported(python, tmp_path / "checkpoint", out, log=lambda m: None)
    assert str(stop.value).startswith("error: the export failed (exit 1)")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_a_venv_without_its_marker_or_with_other_packages_is_made_again(openvino_peer, tmp_path):
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    assert not openvino_peer.venv_is_ready(venv)  # cut short before the marker
    (venv / openvino_peer.MARKER).write_text(json.dumps({"packages": ["openvino"]}))
    assert not openvino_peer.venv_is_ready(venv)
    (venv / openvino_peer.MARKER).write_text(json.dumps({"packages": list(openvino_peer.PACKAGES)}))
    assert openvino_peer.venv_is_ready(venv)
    assert openvino_peer.ensure_venv(venv, log=lambda m: None) == python  # nothing installed: ready as it is
