"""How to install llama-cpp-python for each platform, and which way fits a given machine.

The one place for these commands: `smolcli doctor` prints them and docs/install.md's
"Install on your platform" section quotes them (a test keeps the two the same).
Everything here is a pure function of facts passed in, so it is testable without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
DEFAULT_NVCC = "/usr/local/cuda/bin/nvcc"
# Orin's GPU is sm_87; Xavier is sm_72
ORIN_CUDA_ARCHITECTURE = "87"

_REINSTALL = f"pip install --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"

JETSON_ORIN_INSTALL_COMMAND = (
    f'CUDACXX={DEFAULT_NVCC} CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES={ORIN_CUDA_ARCHITECTURE} '
    f'-DGGML_CUDA_NO_VMM=ON" {_REINSTALL}'
)
# The options of `smolcli ask` / `smolcli chat` that the small-board advice names.
NO_MMPROJ_OFFLOAD_OPTION = "--no-mmproj-offload"
QUANTIZED_CACHE_OPTION = "--cache-type q8_0"
SMALL_BOARD_ADVICE = (
    f"On 8 GB boards, keep the vision encoder on the CPU ({NO_MMPROJ_OFFLOAD_OPTION}) "
    f"and use a quantized KV cache ({QUANTIZED_CACHE_OPTION})."
)
SMALL_BOARD_BYTES = 9 * 1024**3  # an "8 GB" board reports a little under 8 GiB


def cuda_install_command(nvcc: str = DEFAULT_NVCC) -> str:
    """The CUDA desktop / server rebuild, with CUDACXX pointing at this machine's nvcc."""
    return f'CUDACXX={nvcc} CMAKE_ARGS="-DGGML_CUDA=on" {_REINSTALL}'


@dataclass(frozen=True)
class PlatformFacts:
    """What doctor found; tests build these by hand."""

    machine: str  # platform.machine(): x86_64, aarch64, arm64, AMD64
    jetson: bool = False
    jetson_model: str | None = None  # /proc/device-tree/model, e.g. "NVIDIA Jetson Orin Nano Developer Kit"
    gpu_offload: bool = False  # llama_cpp.llama_supports_gpu_offload(): a GPU device is usable
    gpu_backends: tuple[str, ...] = ()  # GPU backends compiled into ggml (CUDA, Metal, Vulkan, ...)
    nvcc: str | None = None
    nvidia_smi: bool = False  # nvidia-smi is on PATH: an NVIDIA driver is installed
    total_ram: int | None = None  # bytes
    nvidia_driver: bool = False  # the NVIDIA kernel driver is loaded (/proc/driver/nvidia/version)

    @property
    def has_nvidia_driver(self) -> bool:
        """What says an NVIDIA GPU is there to use; the CUDA toolkit (nvcc) alone does not."""
        return self.nvidia_smi or self.nvidia_driver


@dataclass(frozen=True)
class Advice:
    summary: str  # one line: where this build runs and whether to act
    command: str | None = None  # the reinstall to run, if one is needed
    notes: list[str] = field(default_factory=list)


def _small_board(facts: PlatformFacts) -> bool:
    return facts.total_ram is None or facts.total_ram <= SMALL_BOARD_BYTES


def _jetson_notes(facts: PlatformFacts) -> list[str]:
    notes = []
    if facts.jetson_model and "orin" not in facts.jetson_model.lower():
        notes.append(
            f"this board ({facts.jetson_model}) is not an Orin: set -DCMAKE_CUDA_ARCHITECTURES to its GPU "
            "(72 for Xavier, 53 for the original Nano) instead of 87"
        )
    if _small_board(facts):
        notes.append(SMALL_BOARD_ADVICE)
    return notes


def advise(facts: PlatformFacts) -> Advice:
    if facts.gpu_offload:
        notes = _jetson_notes(facts) if facts.jetson else []
        return Advice("GPU offload is compiled in and a GPU is visible: nothing to reinstall", None, notes)

    if facts.gpu_backends:
        # built with a GPU backend that found no device: a driver problem, a rebuild would not help
        backends = ", ".join(facts.gpu_backends)
        return Advice(
            f"llama.cpp is built with {backends} but sees no GPU: check the driver "
            "(nvidia-smi, or on a Jetson that JetPack is installed) before rebuilding",
            None,
            _jetson_notes(facts) if facts.jetson else [],
        )

    if facts.jetson:
        notes = []
        if facts.nvcc is None:
            notes.append(f"nvcc was not found at {DEFAULT_NVCC}: install JetPack's CUDA toolkit (nvidia-jetpack) first")
        return Advice(
            "this is a Jetson with a CPU-only llama.cpp build: rebuild llama-cpp-python with CUDA",
            JETSON_ORIN_INSTALL_COMMAND,
            notes + _jetson_notes(facts),
        )

    if facts.nvcc and not facts.has_nvidia_driver:
        # a toolkit without a driver (a build box, a container without the GPU passed in): a CUDA build would find no GPU
        return Advice(
            "the CUDA toolkit is installed but there is no NVIDIA GPU or driver: no GPU to use, "
            "so the CPU build is the right one for this machine",
            None,
            [
                "if this machine does have an NVIDIA GPU, install its driver (nvidia-smi then lists the GPU), "
                f"then rebuild with: {cuda_install_command(facts.nvcc)}"
            ],
        )

    if facts.has_nvidia_driver:
        notes = []
        if facts.nvcc is None:
            notes.append(
                f"an NVIDIA driver is present but nvcc is not: install the CUDA toolkit and point CUDACXX at its nvcc "
                f"(usually {DEFAULT_NVCC})"
            )
        return Advice(
            "CUDA is present but llama.cpp is built CPU-only: rebuild llama-cpp-python with CUDA",
            cuda_install_command(facts.nvcc or DEFAULT_NVCC),
            notes,
        )

    return Advice(
        "CPU-only build and no CUDA found: the CPU build is the right one for this machine",
        None,
        [f"with an NVIDIA GPU and the CUDA toolkit, rebuild with: {cuda_install_command()}"],
    )
