"""`smolcli doctor`: the advice for each kind of machine, the facts it reads, and the real report here."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import llama_cpp
import pytest
import tomllib
from typer.testing import CliRunner

from smolcli.cli.app import app
from smolcli.doctor import system_info
from smolcli.doctor.install_commands import (
    JETSON_ORIN_INSTALL_COMMAND,
    LLAMA_CPP_PYTHON_VERSION,
    SMALL_BOARD_ADVICE,
    PlatformFacts,
    advise,
    cuda_install_command,
)

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3


# --- advice from facts: no GPU needed ------------------------------------------------------


def test_cuda_desktop_with_cpu_build_gets_the_cuda_rebuild_with_its_own_nvcc():
    advice = advise(PlatformFacts("x86_64", nvcc="/opt/cuda-12.4/bin/nvcc", nvidia_smi=True, total_ram=64 * GIB))
    assert advice.command == cuda_install_command("/opt/cuda-12.4/bin/nvcc")
    assert advice.command.startswith('CUDACXX=/opt/cuda-12.4/bin/nvcc CMAKE_ARGS="-DGGML_CUDA=on" pip install')
    assert f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}" in advice.command
    assert "ARCHITECTURES=87" not in advice.command
    assert SMALL_BOARD_ADVICE not in advice.notes


def test_driver_without_toolkit_gets_the_rebuild_and_a_note_to_install_nvcc():
    advice = advise(PlatformFacts("x86_64", nvcc=None, nvidia_smi=True))
    assert advice.command == cuda_install_command()
    assert any("install the CUDA toolkit" in note for note in advice.notes)


def test_jetson_orin_nano_gets_the_orin_rebuild_and_the_small_board_advice():
    facts = PlatformFacts(
        "aarch64",
        jetson=True,
        jetson_model="NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
        nvcc="/usr/local/cuda/bin/nvcc",
        total_ram=int(7.4 * GIB),
    )
    advice = advise(facts)
    assert advice.command == JETSON_ORIN_INSTALL_COMMAND
    assert "-DCMAKE_CUDA_ARCHITECTURES=87" in advice.command and "-DGGML_CUDA_NO_VMM=ON" in advice.command
    assert SMALL_BOARD_ADVICE in advice.notes
    assert "--no-mmproj-offload" in SMALL_BOARD_ADVICE and "q8_0" in SMALL_BOARD_ADVICE
    assert not any("not an Orin" in note for note in advice.notes)


def test_jetson_without_nvcc_is_told_to_install_jetpacks_cuda():
    advice = advise(
        PlatformFacts("aarch64", jetson=True, jetson_model="NVIDIA Jetson AGX Orin", nvcc=None, total_ram=64 * GIB)
    )
    assert advice.command == JETSON_ORIN_INSTALL_COMMAND
    assert any("nvidia-jetpack" in note for note in advice.notes)
    assert SMALL_BOARD_ADVICE not in advice.notes  # 64 GB AGX: no need to squeeze


def test_older_jetson_is_warned_that_the_command_targets_orin():
    advice = advise(
        PlatformFacts("aarch64", jetson=True, jetson_model="NVIDIA Jetson Xavier NX Developer Kit", total_ram=8 * GIB)
    )
    assert any("not an Orin" in note and "72" in note for note in advice.notes)


def test_cpu_only_laptop_needs_no_reinstall():
    advice = advise(PlatformFacts("x86_64", total_ram=16 * GIB))
    assert advice.command is None
    assert "CPU build is the right one" in advice.summary
    assert any(cuda_install_command() in note for note in advice.notes)


@pytest.mark.parametrize(
    "facts",
    [
        PlatformFacts("x86_64", gpu_offload=True, gpu_backends=("CUDA",), nvcc="/usr/bin/nvcc", nvidia_smi=True),
        PlatformFacts("arm64", gpu_offload=True, gpu_backends=("Metal",)),
        PlatformFacts(
            "aarch64",
            jetson=True,
            jetson_model="NVIDIA Jetson AGX Orin",
            gpu_offload=True,
            gpu_backends=("CUDA",),
            total_ram=32 * GIB,
        ),
    ],
)
def test_offload_already_compiled_in_needs_no_reinstall(facts):
    advice = advise(facts)
    assert advice.command is None
    assert "nothing to reinstall" in advice.summary


def test_offload_on_an_8gb_jetson_still_gets_the_small_board_advice():
    advice = advise(
        PlatformFacts(
            "aarch64",
            jetson=True,
            jetson_model="NVIDIA Jetson Orin Nano",
            gpu_offload=True,
            gpu_backends=("CUDA",),
            total_ram=int(7.4 * GIB),
        )
    )
    assert advice.command is None and SMALL_BOARD_ADVICE in advice.notes


def test_cuda_build_that_sees_no_gpu_points_at_the_driver_not_a_rebuild():
    advice = advise(PlatformFacts("x86_64", gpu_offload=False, gpu_backends=("CUDA",), nvcc="/usr/bin/nvcc"))
    assert advice.command is None
    assert "CUDA" in advice.summary and "driver" in advice.summary


def test_cuda_toolkit_without_a_gpu_or_driver_keeps_the_cpu_build():
    advice = advise(
        PlatformFacts("x86_64", nvcc="/usr/local/bin/nvcc", nvidia_smi=False, nvidia_driver=False, total_ram=64 * GIB)
    )
    assert advice.command is None
    assert "no NVIDIA GPU or driver" in advice.summary and "CPU build is the right one" in advice.summary
    assert "rebuild llama-cpp-python" not in advice.summary
    # the rebuild stays one note away, with this machine's own nvcc, for when a GPU and its driver are added
    (note,) = advice.notes
    assert "install its driver" in note and note.endswith(cuda_install_command("/usr/local/bin/nvcc"))


@pytest.mark.parametrize("driver", [{"nvidia_smi": True}, {"nvidia_driver": True}], ids=["nvidia-smi", "proc-driver"])
def test_either_sign_of_a_driver_with_the_toolkit_gets_the_rebuild(driver):
    advice = advise(PlatformFacts("x86_64", nvcc="/usr/local/bin/nvcc", **driver))
    assert advice.command == cuda_install_command("/usr/local/bin/nvcc")


# --- the facts: parsers over real-looking inputs --------------------------------------------


def test_meminfo_is_read_in_bytes_with_available_memory():
    text = "MemTotal:        7799228 kB\nMemFree:          512000 kB\nMemAvailable:    5120000 kB\nBuffers: 1 kB\n"
    assert system_info.parse_meminfo(text) == (7799228 * 1024, 5120000 * 1024)
    assert system_info.parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\n") == (1024000, 10240)  # old kernels


def test_jetson_is_recognised_from_the_device_tree_or_the_l4t_release_file(tmp_path):
    orin = tmp_path / "orin"
    (orin / "proc/device-tree").mkdir(parents=True)
    (orin / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\0")
    assert system_info.jetson(orin) == (True, "NVIDIA Jetson Orin Nano Developer Kit")

    l4t = tmp_path / "l4t"
    (l4t / "etc").mkdir(parents=True)
    (l4t / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    assert system_info.jetson(l4t) == (True, None)

    pi = tmp_path / "pi"
    (pi / "proc/device-tree").mkdir(parents=True)
    (pi / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    assert system_info.jetson(pi) == (False, None)


def test_backend_names_are_parsed_from_llama_system_info():
    cuda = "CUDA : ARCHS = 870 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : NEON = 1 | ARM_FMA = 1 | "
    assert system_info.backends_from_system_info(cuda) == ["CUDA", "CPU"]
    assert system_info.backends_from_system_info("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 |") == ["Metal", "CPU"]


def test_the_fallback_parser_agrees_with_the_backend_registry_of_this_build():
    backends, devices = system_info.registry()
    text = llama_cpp.llama_print_system_info().decode()
    assert system_info.backends_from_system_info(text) == backends
    assert "CPU" in backends
    assert any(device.type == "cpu" for device in devices)


def test_the_nvidia_driver_is_read_from_proc(tmp_path):
    loaded = tmp_path / "loaded"
    (loaded / "proc/driver/nvidia").mkdir(parents=True)
    line = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024"
    (loaded / "proc/driver/nvidia/version").write_text(f"{line}\nGCC version:  gcc version 12.2.0\n")
    assert system_info.nvidia_driver(loaded) == line
    assert system_info.nvidia_driver(tmp_path / "none") is None


def test_nvcc_is_found_through_cuda_home_when_not_on_path(tmp_path, monkeypatch):
    nvcc = tmp_path / "cuda" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    assert system_info.find_nvcc() == (str(nvcc), str(tmp_path / "cuda"))


# --- one source for the commands ------------------------------------------------------------


def test_the_install_page_quotes_the_same_commands_in_its_platform_section():
    page = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", page, flags=re.M)
    assert headings.index("Install on your platform") == headings.index("On a fresh machine") + 1
    section = page.split("## Install on your platform", 1)[1].split("\n## ", 1)[0]
    assert cuda_install_command() in section
    assert JETSON_ORIN_INSTALL_COMMAND in section
    assert SMALL_BOARD_ADVICE in section


def test_the_commands_pin_the_llama_cpp_python_that_the_package_depends_on():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}" in project["dependencies"]
    assert llama_cpp.__version__ == LLAMA_CPP_PYTHON_VERSION


# --- the real command on this machine -------------------------------------------------------


def test_doctor_json_reports_this_build_and_only_json_on_stdout():
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["versions"]["llama-cpp-python"] == llama_cpp.__version__
    assert report["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert report["gpu_offload"] == bool(llama_cpp.llama_supports_gpu_offload())
    assert "CPU" in report["backends"]
    assert report["devices"] and all(device["name"] and device["type"] for device in report["devices"])
    assert any(device["type"] == "cpu" for device in report["devices"])
    assert report["ram_total"] > 0 and 0 < report["ram_available"] <= report["ram_total"]
    assert (report["nvcc"], report["cuda_home"]) == system_info.find_nvcc()
    assert report["nvidia_smi"] == system_info.find_nvidia_smi()
    assert report["nvidia_driver"] == system_info.nvidia_driver()
    facts = PlatformFacts(
        report["machine"],
        report["jetson"],
        report["jetson_model"],
        report["gpu_offload"],
        tuple(b for b in report["backends"] if b not in system_info.CPU_SIDE_BACKENDS),
        report["nvcc"],
        report["nvidia_smi"] is not None,
        report["ram_total"],
        report["nvidia_driver"] is not None,
    )
    expected = advise(facts)
    assert report["advice"] == {"summary": expected.summary, "command": expected.command, "notes": expected.notes}
    assert report["advice"]["summary"]


def test_doctor_prints_a_readable_report_with_the_advice():
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(rf"llama-cpp-python\s+{re.escape(llama_cpp.__version__)}", out)
    assert re.search(rf"GPU offload\s+{'yes' if llama_cpp.llama_supports_gpu_offload() else 'no'}\n", out)
    assert re.search(r"^devices:\n  CPU\s", out, flags=re.M)
    assert re.search(r"^nvcc\s+(\S+)$", out, flags=re.M).group(1) == (system_info.find_nvcc()[0] or "not found")
    advice = advise(system_info.collect().facts())
    assert f"\nadvice: {advice.summary}\n" in out
    assert ("run in the environment smolcli is installed in" in out) == (advice.command is not None)
    if advice.command:
        assert f"\n  {advice.command}\n" in out
    for note in advice.notes:
        assert f"  note: {note}" in out


@pytest.fixture
def toolkit_without_gpu(monkeypatch):
    """This machine as one with the CUDA toolkit but no NVIDIA GPU, driver or nvidia-smi, and a CPU-only build."""
    monkeypatch.setattr(system_info, "find_nvcc", lambda: ("/usr/local/cuda/bin/nvcc", "/usr/local/cuda"))
    monkeypatch.setattr(system_info, "find_nvidia_smi", lambda: None)
    monkeypatch.setattr(system_info, "nvidia_driver", lambda root=None: None)
    monkeypatch.setattr(system_info, "jetson", lambda root=None: (False, None))
    real_build = system_info.llama_build

    def cpu_build():
        _, backends, devices, text = real_build()
        return (
            False,
            [b for b in backends if b in system_info.CPU_SIDE_BACKENDS],
            [d for d in devices if d.type == "cpu"],
            text,
        )

    monkeypatch.setattr(system_info, "llama_build", cpu_build)


def test_doctor_on_a_toolkit_without_a_gpu_says_the_cpu_build_is_right(toolkit_without_gpu):
    report = json.loads(CliRunner().invoke(app, ["doctor", "--json"]).stdout)
    assert (report["nvcc"], report["nvidia_smi"], report["nvidia_driver"]) == ("/usr/local/cuda/bin/nvcc", None, None)
    assert report["advice"]["command"] is None
    assert "no NVIDIA GPU or driver" in report["advice"]["summary"]
    assert "CPU build is the right one" in report["advice"]["summary"]

    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "\nadvice: the CUDA toolkit is installed but there is no NVIDIA GPU or driver" in result.stdout
    assert "run in the environment" not in result.stdout  # no command to run
    assert re.search(r"^NVIDIA driver\s+not loaded$", result.stdout, flags=re.M)


# --- the vision engine's lines ---------------------------------------------------------------

X86_CPUINFO = """processor\t: 0
model name\t: Some x86 CPU
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes crc32 atomics asimddp i8mm bf16
"""


def test_mlas_features_are_read_from_cpuinfo_flags():
    from smolcli.util.cpu_features import features_from_cpuinfo

    assert features_from_cpuinfo(X86_CPUINFO, "x86_64") == {
        "AVX2": True,
        "AVX-512": True,
        "AVX-512 VNNI": True,
        "AVX-VNNI": False,
        "AMX": False,
    }
    assert features_from_cpuinfo(X86_CPUINFO.replace(" avx512bw", ""), "x86_64")["AVX-512"] is False
    assert features_from_cpuinfo(ARM_CPUINFO, "aarch64") == {"dot product": True, "i8mm": True}
    from smolcli.util.cpu_features import bf16_from_cpuinfo

    assert bf16_from_cpuinfo(X86_CPUINFO, "x86_64") and bf16_from_cpuinfo(ARM_CPUINFO, "aarch64")
    assert not bf16_from_cpuinfo(X86_CPUINFO.replace(" avx512_bf16", ""), "x86_64")
    assert not bf16_from_cpuinfo(ARM_CPUINFO.replace(" bf16", ""), "aarch64")
    assert features_from_cpuinfo(ARM_CPUINFO.replace(" asimddp i8mm", ""), "arm64") == {
        "dot product": False,
        "i8mm": False,
    }


def test_doctor_names_onnxruntime_and_the_cpu_features_llama_cpp_also_sees():
    import onnxruntime

    report = json.loads(CliRunner().invoke(app, ["doctor", "--json"]).stdout)
    assert report["onnxruntime"] == onnxruntime.__version__
    features = report["cpu_features"]
    if features is None or "AVX2" not in features:
        pytest.skip("not an x86-64 Linux machine")
    # llama.cpp's own CPU probe (ggml's feature detection) is an independent reading of the same CPU
    ggml = report["llama_system_info"]
    assert features["AVX2"] == ("AVX2 = 1" in ggml)
    assert features["AVX-512 VNNI"] == ("AVX512_VNNI = 1" in ggml)
    text = CliRunner().invoke(app, ["doctor"]).stdout
    assert f"onnxruntime {onnxruntime.__version__}: auto encodes images" in text
    assert re.search(r"ORT CPU features +AVX2 (yes|no), AVX-512 (yes|no), AVX-512 VNNI", text)


def test_doctor_without_onnxruntime_says_auto_uses_mtmd():
    """A real process where onnxruntime cannot be imported (None in sys.modules makes the import fail)."""
    import subprocess

    code = "import sys; sys.modules['onnxruntime'] = None; from smolcli.cli.app import app; app(['doctor'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "onnxruntime not installed: auto uses mtmd" in done.stdout
