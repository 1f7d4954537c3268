#!/usr/bin/env bash
# The GPU check: run it whenever a machine with an NVIDIA GPU is at hand.
#
#   bash benchmarks/gpu_check.sh [WORKDIR]        # WORKDIR default: ~/.cache/smolcli-gpu-check
#
# 1. a fresh venv in WORKDIR with smolcli (this checkout, editable) and the reference tests' packages, then
#    llama-cpp-python==0.3.36 rebuilt with CUDA (the README's CUDA line, for this GPU's architecture only);
# 2. the reference tests that compare our logits with transformers' (tests/test_convert_parity.py,
#    tests/test_adapters_reference.py), every layer and the mmproj on the GPU (SMOLCLI_TEST_GPU_LAYERS=-1);
# 3. `smolcli bench` on SmolVLM-2.2B shapes, Q4_K_M + Q8_0 mmproj (every layer on the GPU, as smolcli ask does on
#    a CUDA build), GPU memory sampled with nvidia-smi, against the 5.02 GB transformers took in the seed;
# then one table. Exit 0 only if every step passed; on a machine without nvidia-smi or nvcc it refuses in one line.
#
# Time on a 16-core machine: the CUDA build of llama-cpp-python is the long step (about 3-6 min; one
# architecture, CMAKE_BUILD_PARALLEL_LEVEL = cores); the first run also installs torch 2.13.0 (the tests' version;
# PyPI's Linux wheel brings its CUDA libraries, several GB, unless a CPU wheel lies in PIP_FIND_LINKS) and transformers
# (network, or PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR for a wheel folder) and writes and converts the random 2.2B checkpoint
# (about 2 min, kept in WORKDIR/home for later runs). The tests take 1-3 min and the bench (3 answers) under 1 min.
# A rerun with the same WORKDIR reuses the venv (delete WORKDIR/venv/.complete to rebuild) and the bench files.
set -uo pipefail

refuse() {
    echo "gpu_check: $*" >&2
    exit 2
}

command -v nvidia-smi >/dev/null 2>&1 ||
    refuse "no nvidia-smi: this check needs a machine with an NVIDIA GPU and its driver (nothing was run)"
nvidia-smi -L >/dev/null 2>&1 || refuse "nvidia-smi sees no GPU (driver not loaded?); nothing was run"
NVCC="${CUDACXX:-$(command -v nvcc || true)}"
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
if [ -z "$NVCC" ] || [ ! -x "$NVCC" ]; then
    refuse "no nvcc (CUDA toolkit): put it on PATH or set CUDACXX to it; nothing was run"
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$HOME/.cache/smolcli-gpu-check}"
VENV="$WORK/venv"
PY="$VENV/bin/python"
LOGS="$WORK/logs"
export SMOLCLI_HOME="$WORK/home"
SEED_TRANSFORMERS_GB=5.02 # transformers' peak for one 2.2B answer in the seed's measurement
mkdir -p "$LOGS" "$SMOLCLI_HOME"

declare -a ROWS
failed=0
step() { # step NAME SECONDS RESULT: one row of the final table
    ROWS+=("$(printf '| %-34s | %6ss | %s |' "$1" "$2" "$3")")
}
now() { date +%s; }
finish() {
    echo
    echo "GPU check: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1), nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
    echo "| step                               |    time | result |"
    echo "| ---------------------------------- | ------- | ------ |"
    printf '%s\n' "${ROWS[@]}"
    echo "logs: $LOGS"
    exit "$failed"
}

# 1. the venv and the CUDA build ------------------------------------------------------------------------------
t0=$(now)
if [ ! -f "$VENV/.complete" ]; then
    echo "making $VENV and building llama-cpp-python with CUDA (the long step) ..." >&2
    rm -rf "$VENV"
    if ! { python3 -m venv "$VENV" &&
        "$PY" -m pip install -q -e "$REPO" pytest "transformers>=5.0,<6" "peft>=0.21,<0.22" torch==2.13.0 &&
        CUDACXX="$NVCC" CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native" \
            CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$PY" -m pip install -q --force-reinstall --no-deps \
            --no-cache-dir --no-binary llama-cpp-python llama-cpp-python==0.3.36; } >"$LOGS/build.log" 2>&1; then
        failed=1
        step "venv + llama-cpp-python CUDA build" $(($(now) - t0)) "FAILED: tail $LOGS/build.log"
        finish
    fi
    touch "$VENV/.complete"
fi
if ! "$PY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" \
    >>"$LOGS/build.log" 2>&1; then
    failed=1
    step "venv + llama-cpp-python CUDA build" $(($(now) - t0)) "FAILED: the build cannot offload to the GPU"
    finish
fi
step "venv + llama-cpp-python CUDA build" $(($(now) - t0)) "ok: GPU offload yes"

# 2. the reference tests on the GPU path --------------------------------------------------------------------
t0=$(now)
echo "reference tests, every layer on the GPU ..." >&2
(cd "$REPO" && SMOLCLI_TEST_GPU_LAYERS=-1 "$PY" -m pytest -m reference -q -p no:cacheprovider \
    tests/test_convert_parity.py tests/test_adapters_reference.py) >"$LOGS/tests.log" 2>&1
status=$?
summary="$(tail -n 1 "$LOGS/tests.log")"
if [ "$status" -eq 0 ]; then
    step "reference tests (GPU)" $(($(now) - t0)) "ok: $summary"
else
    failed=1
    step "reference tests (GPU)" $(($(now) - t0)) "FAILED: $summary ($LOGS/tests.log)"
fi

# 3. speed and memory on 2.2B shapes ------------------------------------------------------------------------
t0=$(now)
echo "smolcli bench, 2.2B shapes (the first run writes and converts the checkpoint) ..." >&2
# the bench files first, outside the sampled runs (a failure here shows again below)
"$PY" -c "from smolcli.bench.files import prepare_files; prepare_files('2.2b', 'Q4_K_M', 'Q8_0')" \
    >"$LOGS/prepare.log" 2>&1
baseline=$(nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$LOGS/gpu_memory.txt" 2>/dev/null &
sampler=$!
"$VENV/bin/smolcli" bench --shape 2.2b --quant Q4_K_M --mmproj-type Q8_0 --repeats 3 --json \
    >"$LOGS/bench.json" 2>"$LOGS/bench.log"
status=$?
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
if [ "$status" -ne 0 ]; then
    failed=1
    step "smolcli bench 2.2B (GPU)" $(($(now) - t0)) "FAILED: $(tail -n 1 "$LOGS/bench.log")"
    finish
fi
peak_mib=$(sort -n "$LOGS/gpu_memory.txt" | tail -n 1)
row=$("$PY" - "$LOGS/bench.json" "$baseline" "${peak_mib:-$baseline}" "$SEED_TRANSFORMERS_GB" <<'EOF'
import json, sys
report, baseline, peak, seed = json.load(open(sys.argv[1])), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = report["settings"][0]
gpu_gb = (peak - baseline) * 2**20 / 1e9
print(f"ok: {s['wall_s']:.2f} s whole, encode {s['encode_s']:.3f} s ({s['tiles']} tiles), "
      f"prefill {s['prefill_tokens_per_s']:.0f} tok/s, decode {s['decode_tokens_per_s']:.1f} tok/s, "
      f"peak RSS {s['peak_rss_bytes'] / 1e9:.2f} GB, GPU memory {gpu_gb:.2f} GB "
      f"(RSS + GPU {(s['peak_rss_bytes'] / 1e9 + gpu_gb) / seed:.2f}x transformers' {seed} GB)")
EOF
)
if [ -z "$row" ]; then
    failed=1
    row="FAILED: could not read $LOGS/bench.json"
fi
step "smolcli bench 2.2B Q4_K_M+Q8_0 (GPU)" $(($(now) - t0)) "$row"
finish
