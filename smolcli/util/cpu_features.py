"""The CPU features ONNX Runtime's MLAS kernels pick from, for `smolcli doctor`'s vision-engine lines.

MLAS chooses its int8 and float kernels at run time: on x86-64 AVX2, AVX-512 (F/BW/DQ/VL), AVX-512
VNNI or AVX-VNNI (int8 dot products) and AMX (int8 tiles); on Arm the dot-product (SDOT/UDOT) and
i8mm (SMMLA) instructions. Read from /proc/cpuinfo's flags (Linux), else sysctl (macOS).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

# label -> the /proc/cpuinfo flags that must all be present
X86_FEATURES = {
    "AVX2": ("avx2", "fma"),
    "AVX-512": ("avx512f", "avx512bw", "avx512dq", "avx512vl"),
    "AVX-512 VNNI": ("avx512_vnni",),
    "AVX-VNNI": ("avx_vnni",),
    "AMX": ("amx_tile", "amx_int8"),
}
ARM_FEATURES = {"dot product": ("asimddp",), "i8mm": ("i8mm",)}
# macOS: the same features by sysctl name
MACOS_SYSCTL = {
    "AVX2": "hw.optional.avx2_0",
    "AVX-512": "hw.optional.avx512f",
    "AVX-512 VNNI": "hw.optional.avx512vnni",
    "dot product": "hw.optional.arm.FEAT_DotProd",
    "i8mm": "hw.optional.arm.FEAT_I8MM",
}


def is_arm(machine: str) -> bool:
    return machine.lower() in ("aarch64", "arm64") or machine.lower().startswith("arm")


def features_from_cpuinfo(text: str, machine: str) -> dict[str, bool]:
    """{label: present} for this architecture's MLAS features, from /proc/cpuinfo's flags (x86) or Features (Arm)."""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    table = ARM_FEATURES if is_arm(machine) else X86_FEATURES
    return {label: all(flag in flags for flag in needed) for label, needed in table.items()}


def _macos_features(machine: str) -> dict[str, bool]:
    table = ARM_FEATURES if is_arm(machine) else X86_FEATURES
    found = {}
    for label in table:
        name = MACOS_SYSCTL.get(label)
        if name is None:
            continue
        try:
            out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        found[label] = out == "1"
    return found


def cpu_features(root: Path = Path("/")) -> dict[str, bool] | None:
    """This CPU's MLAS features, or None where they cannot be read (Windows, a cpuinfo without flags)."""
    machine = platform.machine()
    try:
        text = (root / "proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return _macos_features(machine) if sys.platform == "darwin" else None
    if not any(line.lower().startswith(("flags", "features")) for line in text.splitlines()):
        return None
    return features_from_cpuinfo(text, machine)


# bfloat16 arithmetic in hardware: AVX-512 BF16 or AMX-BF16 (x86-64), the bf16 extension (Arm)
BF16_FLAGS = {"x86": ("avx512_bf16", "amx_bf16"), "arm": ("bf16",)}


def bf16_from_cpuinfo(text: str, machine: str) -> bool:
    """Whether /proc/cpuinfo's flags (x86) or Features (Arm) name a native bfloat16 instruction set."""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return any(flag in flags for flag in BF16_FLAGS["arm" if is_arm(machine) else "x86"])


def native_bf16(root: Path = Path("/")) -> bool | None:
    """This CPU computes bfloat16 natively; None where /proc/cpuinfo cannot be read."""
    try:
        text = (root / "proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    return bf16_from_cpuinfo(text, platform.machine())
