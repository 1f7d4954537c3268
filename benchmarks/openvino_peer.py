"""OpenVINO as a peer of smolcli: its own virtualenv, an int8 IR export of the checkpoint, and one timed answer.

Used by benchmarks/peers.py. OpenVINO never enters the project's environment: optimum-intel 2.2 exports Idefics3
(SmolVLM) only with transformers at most 4.57.6, so it lives in a venv of its own, made on first use with exactly
the packages below. openvino_genai's VLMPipeline does not know Idefics3, so the answer runs through optimum.intel's
OVModelForVisualCausalLM and the transformers processor, in a child Python of that venv.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_VENV = Path.home() / ".cache" / "smolcli-bench" / "openvino-venv"
PACKAGES = (
    "optimum-intel[openvino]==2.2.0",
    "openvino",
    "nncf",
    "protobuf",
    "sentencepiece",
    "transformers==4.57.6",  # optimum-intel 2.2's Idefics3 exporter refuses newer
    "torch==2.13.0",  # the CPU build beside the project's; an unpinned torch pulls GBs of CUDA wheels
)
# PyPI's torchvision fails to import beside the CPU torch, and transformers would import it: removed after install.
REMOVED = ("torchvision",)
MARKER = "smolcli-peers.json"  # written last: a venv without it is incomplete and made again


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_is_ready(venv: Path) -> bool:
    try:
        marker = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("packages") == list(PACKAGES) and python_of(venv).exists()


def ensure_venv(venv: Path, log=print) -> Path:
    """The venv's python, the venv made (or remade, when a build was cut short) with PACKAGES first."""
    if venv_is_ready(venv):
        return python_of(venv)
    log(f"making the OpenVINO venv {venv} (once; a few minutes, about 1.6 GB): {' '.join(PACKAGES)}")
    started = time.perf_counter()
    venv.parent.mkdir(parents=True, exist_ok=True)
    # --clear: a venv left half-made by an earlier, interrupted run starts over
    run_checked([sys.executable, "-m", "venv", "--clear", str(venv)], "making the venv")
    pip = [str(python_of(venv)), "-m", "pip"]
    run_checked([*pip, "install", "--quiet", *PACKAGES], "installing OpenVINO's packages")
    run_checked([*pip, "uninstall", "--quiet", "-y", *REMOVED], "removing torchvision")
    (venv / MARKER).write_text(json.dumps({"packages": list(PACKAGES), "removed": list(REMOVED)}))
    log(f"  made it in {time.perf_counter() - started:.0f} s")
    return python_of(venv)


def run_checked(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        sys.exit(f"error: {what} failed (exit {done.returncode}): {' '.join(command[:4])} ...\n" + "\n".join(tail))
    return done.stdout


def exported(python: Path, checkpoint: Path, out: Path, log=print) -> Path:
    """The checkpoint as OpenVINO IR with int8 weights, exported once into `out` (made whole, then renamed)."""
    marker = {"checkpoint": str(checkpoint), "packages": list(PACKAGES)}
    try:
        if json.loads((out / EXPORT_MARKER).read_text()) == marker:
            return out
    except (OSError, ValueError):
        pass  # not exported yet, cut short, or by other packages: export again
    log(f"exporting {checkpoint} to OpenVINO IR (int8 weights) in {out} (once)")
    started = time.perf_counter()
    stage = out.with_name(f".building-{out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(stage, ignore_errors=True)
    optimum_cli = python.parent / "optimum-cli"
    command = [str(optimum_cli), "export", "openvino", "--model", str(checkpoint)]
    try:
        run_checked([*command, "--task", "image-text-to-text", "--weight-format", "int8", str(stage)], "the export")
        (stage / EXPORT_MARKER).write_text(json.dumps(marker))  # last: a folder without it is not whole
        shutil.rmtree(out, ignore_errors=True)
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # a failed or interrupted export leaves nothing behind
    log(f"  exported in {time.perf_counter() - started:.0f} s")
    return out


EXPORT_MARKER = "smolcli-export.json"

# One cold answer in the OpenVINO venv (run by measure.run_fresh with that venv's python). The prompt is smolcli's,
# processed by transformers' Idefics3 processor; greedy, exactly n new tokens. The encoder is timed by wrapping the
# model's get_vision_embeddings (the exported vision tower and connector); prefill and decode as for transformers.
ANSWER = r"""
import json, sys, time, warnings
started = time.perf_counter()
ir, checkpoint, image_path, prompt, n_tokens, threads = sys.argv[1:5] + [int(sys.argv[5]), int(sys.argv[6])]
import torch
from PIL import Image
from optimum.intel import OVModelForVisualCausalLM
from transformers import AutoTokenizer, Idefics3ImageProcessor, Idefics3Processor, LogitsProcessor, LogitsProcessorList
torch.set_num_threads(threads)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = OVModelForVisualCausalLM.from_pretrained(ir, device="CPU", ov_config={"INFERENCE_NUM_THREADS": str(threads)})
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    seq_len = json.load(open(f"{checkpoint}/processor_config.json"))["image_seq_len"]
    processor = Idefics3Processor(image_processor=Idefics3ImageProcessor.from_pretrained(checkpoint),
                                  tokenizer=tokenizer, image_seq_len=seq_len)
encoder = []
vision = model.get_vision_embeddings
def timed_vision(*args, **kwargs):
    start = time.perf_counter()
    out = vision(*args, **kwargs)
    if out is not None:
        encoder.append(time.perf_counter() - start)
    return out
model.get_vision_embeddings = timed_vision
loaded = time.perf_counter()
inputs = processor(text=prompt, images=[Image.open(image_path)], return_tensors="pt")
stamps = []
class Stamp(LogitsProcessor):
    def __call__(self, input_ids, scores):
        stamps.append(time.perf_counter())
        return scores
generating = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    output = model.generate(**inputs, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False,
                            logits_processor=LogitsProcessorList([Stamp()]), pad_token_id=tokenizer.eos_token_id)
done = time.perf_counter()
new = output[0, inputs["input_ids"].shape[1]:].tolist()
try:  # what the CPU plugin computes in: bf16 where the CPU has AVX-512 BF16 or AMX, else f32
    hint = model.language_model.request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")
    precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
except Exception:
    precision = None
import openvino
print(json.dumps({
    "load_s": loaded - started, "preprocess_s": generating - loaded,
    "prefill_s": stamps[0] - generating, "image_encode_s": sum(encoder),
    "decode_s": done - stamps[0], "decoded_tokens": len(new) - 1,
    "prompt_tokens": inputs["input_ids"].shape[1], "new_tokens": len(new),
    "text": tokenizer.decode(new), "peak_rss_bytes": peak_rss(),
    "inference_precision": precision, "openvino": openvino.__version__.split("-")[0],
}))
"""


if __name__ == "__main__":
    ensure_venv(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_VENV, log=lambda m: print(m, file=sys.stderr))
