"""How much work SmolVLM's vision encoder does per tile, and a numpy matmul to compare its speed with.

`encoder_flops_per_tile` counts the floating-point operations from the shape alone;
`matmul_reference` measures numpy float32 matmul GFLOP/s in a fresh process held to the
same thread count, a yardstick for the encoder's GFLOP/s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from smolcli.models.smolvlm_shapes import SHAPES

MATMUL_SIZE, MATMUL_SECONDS = 1024, 1.0
BLAS_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def encoder_flops_per_tile(shape: str) -> int:
    """Floating-point operations of the vision encoder and connector for one tile.

    2 per multiply-add of every weight matrix, per patch: patch embedding, q/k/v/out projections and
    the two MLP matrices of every layer, and the connector after the pixel shuffle (patches / s^2
    rows of width * s^2, the same multiply-adds as patches rows of width); plus attention's
    Q K^T and weights x V, 2 * patches^2 * width multiply-adds per layer. Norms, GELU and softmax
    are left out (a few percent).
    """
    from smolcli.models.smolvlm import SMOLVLM

    entry = SHAPES[shape]
    vision = {**SMOLVLM.vision_defaults, **entry["vision"]}
    width, ffn, patch, layers = (
        vision["hidden_size"],
        vision["intermediate_size"],
        vision["patch_size"],
        vision["num_hidden_layers"],
    )
    patches = (vision["image_size"] // patch) ** 2
    embedding = patches * vision["num_channels"] * patch * patch * width
    per_layer = patches * (4 * width * width + 2 * width * ffn)
    connector = patches * width * entry["text"]["hidden_size"]
    attention = 2 * patches * patches * width
    return 2 * (embedding + layers * per_layer + connector + layers * attention)


MATMUL_SCRIPT = r"""
import json, sys, time
import numpy as np
n, seconds = int(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
out = np.empty((n, n), dtype=np.float32)
for _ in range(2):
    np.matmul(a, b, out=out)  # warm-up: the BLAS threads started, the pages touched
count, started = 0, time.perf_counter()
while True:
    np.matmul(a, b, out=out)
    count += 1
    elapsed = time.perf_counter() - started
    if elapsed >= seconds:
        break
try:
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    blas = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
except Exception:
    blas = "unknown BLAS"
print(json.dumps({"gflops": 2 * n**3 * count / elapsed / 1e9, "matmuls": count, "seconds": elapsed,
                  "numpy": np.__version__, "blas": blas}))
"""


def matmul_reference(threads: int) -> dict | None:
    """numpy float32 matmul GFLOP/s on `threads` threads, in a fresh process whose BLAS is held to that count."""
    env = {**os.environ, **{name: str(threads) for name in BLAS_THREAD_VARIABLES}}
    try:
        done = subprocess.run(
            [sys.executable, "-c", MATMUL_SCRIPT, str(MATMUL_SIZE), str(MATMUL_SECONDS)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    figures["what"] = (
        f"numpy {figures['numpy']} float32 {MATMUL_SIZE}x{MATMUL_SIZE} @ {MATMUL_SIZE}x{MATMUL_SIZE} matmul "
        f"({figures['blas']}), {threads} thread{'s' if threads != 1 else ''}, {figures['matmuls']} products in {figures['seconds']:.1f} s"
    )
    figures["threads"] = threads
    return figures
