"""Facts about this machine and this llama.cpp build, for `smolcli doctor`."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from smolcli.doctor.install_commands import DEFAULT_NVCC, PlatformFacts
from smolcli.util.cpu_features import cpu_features

DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}  # enum ggml_backend_dev_type
CPU_SIDE_BACKENDS = {"CPU", "BLAS", "RPC"}  # registered backends that are not a GPU


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    type: str  # cpu, gpu, igpu, accel
    memory_free: int | None = None  # bytes
    memory_total: int | None = None


@dataclass(frozen=True)
class SystemInfo:
    versions: dict[str, str]
    python_executable: str
    platform: str
    machine: str
    gpu_offload: bool
    backends: list[str]  # ggml backends compiled in
    devices: list[Device]
    llama_system_info: str
    ram_total: int | None
    ram_available: int | None
    jetson: bool
    jetson_model: str | None
    nvcc: str | None
    cuda_home: str | None
    nvidia_smi: str | None
    nvidia_driver: str | None  # the loaded kernel driver's version line, from /proc/driver/nvidia/version
    onnxruntime: str | None = None  # its version where it and onnx import (the ONNX vision engine), else None
    cpu_features: dict[str, bool] | None = None  # what ONNX Runtime's MLAS kernels use (cpu_features.py)

    def facts(self) -> PlatformFacts:
        return PlatformFacts(
            machine=self.machine,
            jetson=self.jetson,
            jetson_model=self.jetson_model,
            gpu_offload=self.gpu_offload,
            gpu_backends=tuple(b for b in self.backends if b not in CPU_SIDE_BACKENDS),
            nvcc=self.nvcc,
            nvidia_smi=self.nvidia_smi is not None,
            total_ram=self.ram_total,
            nvidia_driver=self.nvidia_driver is not None,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    import smolcli

    found = {"smolcli": smolcli.__version__, "python": platform.python_version()}
    for name in ("llama-cpp-python", "gguf", "numpy", "pillow", "typer"):
        found[name] = _version(name)
    return found


# --- llama.cpp / ggml ----------------------------------------------------------------------


def _ggml_library():
    """libggml as llama-cpp-python loaded it; it holds the backend registry (no Python bindings for it)."""
    from llama_cpp import _ggml

    lib = _ggml.libggml
    lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    lib.ggml_backend_reg_get.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_reg_name.restype = ctypes.c_char_p
    lib.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.restype = None
    lib.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    return lib


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def registry() -> tuple[list[str], list[Device]]:
    """The ggml backends compiled in and the devices they see."""
    lib = _ggml_library()
    backends = [
        _text(lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i))) for i in range(lib.ggml_backend_reg_count())
    ]
    devices = []
    for index in range(lib.ggml_backend_dev_count()):
        device = lib.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            Device(
                _text(lib.ggml_backend_dev_name(device)),
                _text(lib.ggml_backend_dev_description(device)),
                DEVICE_TYPES.get(lib.ggml_backend_dev_type(device), "unknown"),
                free.value or None,
                total.value or None,
            )
        )
    return backends, devices


def backends_from_system_info(text: str) -> list[str]:
    """'CUDA : ARCHS = 870 | ... | CPU : SSE3 = 1 | ...' -> ['CUDA', 'CPU']: the fallback when the registry is unreachable."""
    return re.findall(r"(?:^|\|)\s*([A-Za-z][A-Za-z0-9_]*)\s*:", text)


def llama_build() -> tuple[bool, list[str], list[Device], str]:
    import llama_cpp

    llama_cpp.llama_backend_init()
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    text = _text(llama_cpp.llama_print_system_info()).strip()
    try:
        backends, devices = registry()
    except (AttributeError, OSError, ImportError):
        backends, devices = backends_from_system_info(text), []
    return offload, backends, devices, text


# --- the ONNX vision engine ----------------------------------------------------------------


def onnxruntime_version() -> str | None:
    """ONNX Runtime's version where it and onnx import (what --vision-engine auto needs), else None."""
    from smolcli.runtime.vision.onnx_vision import onnxruntime_available

    if not onnxruntime_available():
        return None
    try:
        import onnxruntime
    except ImportError:  # installed but broken: the engine falls back to mtmd as if it were missing
        return None
    return str(onnxruntime.__version__)


# --- the machine ---------------------------------------------------------------------------


def parse_meminfo(text: str) -> tuple[int | None, int | None]:
    """/proc/meminfo -> (total, available) in bytes."""
    values = {}
    for line in text.splitlines():
        match = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if match:
            values[match.group(1)] = int(match.group(2)) * 1024
    return values.get("MemTotal"), values.get("MemAvailable", values.get("MemFree"))


def memory() -> tuple[int | None, int | None]:
    try:
        return parse_meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        pass
    try:  # other Unixes; available pages are not known everywhere (macOS)
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError):
            available = None
        return total, available
    except (ValueError, OSError, AttributeError):
        return None, None


def jetson(root: Path = Path("/")) -> tuple[bool, str | None]:
    """(is a Jetson, board model) from L4T's release file and the device tree."""
    model = None
    try:
        model = (root / "proc/device-tree/model").read_bytes().rstrip(b"\0\n").decode("utf-8", "replace") or None
    except OSError:
        pass
    found = (root / "etc/nv_tegra_release").exists() or bool(model and "jetson" in model.lower())
    return found, model if found else None


def find_nvcc() -> tuple[str | None, str | None]:
    """(nvcc path, CUDA home): PATH first, then CUDA_HOME / CUDA_PATH, then JetPack's fixed place (not on PATH there)."""
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    on_path = shutil.which("nvcc")
    if on_path:
        return on_path, cuda_home
    candidates = [Path(cuda_home) / "bin" / "nvcc"] if cuda_home else []
    candidates.append(Path(DEFAULT_NVCC))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate), cuda_home
    return None, cuda_home


def find_nvidia_smi() -> str | None:
    return shutil.which("nvidia-smi")


def nvidia_driver(root: Path = Path("/")) -> str | None:
    """The NVIDIA kernel driver's version line when it is loaded (Linux), else None."""
    try:
        text = (root / "proc/driver/nvidia/version").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    return first or "loaded"


def collect() -> SystemInfo:
    offload, backends, devices, text = llama_build()
    ram_total, ram_available = memory()
    is_jetson, model = jetson()
    machine = platform.machine()
    nvcc, cuda_home = find_nvcc()
    return SystemInfo(
        versions=versions(),
        python_executable=sys.executable,
        platform=platform.platform(),
        machine=machine,
        gpu_offload=offload,
        backends=backends,
        devices=devices,
        llama_system_info=text,
        ram_total=ram_total,
        ram_available=ram_available,
        jetson=is_jetson and machine.lower() in ("aarch64", "arm64"),
        jetson_model=model,
        nvcc=nvcc,
        cuda_home=cuda_home,
        nvidia_smi=find_nvidia_smi(),
        nvidia_driver=nvidia_driver(),
        onnxruntime=onnxruntime_version(),
        cpu_features=cpu_features(),
    )
