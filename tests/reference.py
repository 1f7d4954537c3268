"""transformers as the reference: the same prompt and images through the Hugging Face model and through our GGUF pair."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.vision.images import load_image


@dataclass
class Run:
    token_ids: list[int]  # text tokens, and the image token id repeated for each image position
    logits: np.ndarray  # last position


class TransformersReference:
    def __init__(self, checkpoint: Path):
        import torch
        from transformers import AutoModelForImageTextToText, AutoTokenizer, Idefics3Processor
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
            # SmolVLM2's own processor needs torchvision (for video); its image prompt is Idefics3's.
            seq_len = json.loads((checkpoint / "processor_config.json").read_text())["image_seq_len"]
            self.processor = Idefics3Processor(
                image_processor=Idefics3ImageProcessorPil.from_pretrained(checkpoint),
                tokenizer=self.tokenizer,
                image_seq_len=seq_len,
            )
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<image>")

    def run(self, prompt: str, image_paths: list[Path], longest_edge: int | None = None) -> Run:
        """longest_edge: resize images to this instead of the checkpoint's own size (--image-size)."""
        import torch
        from PIL import Image

        if image_paths:
            sizing = {"size": {"longest_edge": longest_edge}} if longest_edge else {}
            inputs = self.processor(
                text=prompt, images=[Image.open(p) for p in image_paths], return_tensors="pt", **sizing
            )
        else:
            inputs = self.tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            logits = self.model(**inputs).logits[0, -1].numpy()
        return Run(inputs["input_ids"][0].tolist(), logits)


def engine_options(**options) -> EngineOptions:
    """Our side's engine options: on the CPU, or with SMOLCLI_TEST_GPU_LAYERS=N (-1: all) N layers and the mmproj
    on the GPU, as benchmarks/gpu_check.sh runs these tests on a CUDA build."""
    return EngineOptions(n_gpu_layers=int(os.environ.get("SMOLCLI_TEST_GPU_LAYERS", "0")), **options)


class GGUFRun:
    def __init__(self, model: Path, mmproj: Path, image_token_id: int):
        self.engine = Engine(resolve_model_files(model, mmproj), engine_options(threads=2))
        self.context = self.engine.new_context(2048)
        self.image_token_id = image_token_id

    def run(self, prompt: str, image_paths: list[Path]) -> Run:
        self.context.clear()
        tokenized = self.engine.tokenize(prompt, [load_image(p) for p in image_paths])
        try:
            self.engine.evaluate(tokenized, self.context)
            ids: list[int] = []
            for chunk in tokenized.chunks:
                ids += chunk.tokens if chunk.kind == "text" else [self.image_token_id] * chunk.n_tokens
        finally:
            tokenized.free()
        return Run(ids, self.context.last_logits())

    def close(self) -> None:
        self.engine.close()


def max_abs_diff(reference: Run, ours: Run) -> float:
    n = reference.logits.shape[0]
    return float(np.abs(reference.logits - ours.logits[:n]).max())


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """The next token's log-probabilities from a position's logits (float64)."""
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def logprob_diff(reference: Run, ours: Run) -> float:
    """The first answer token's log-probabilities (log-softmax of the last logits): the largest difference."""
    n = reference.logits.shape[0]
    return float(np.abs(log_softmax(reference.logits) - log_softmax(ours.logits[:n])).max())


def cosine(reference: Run, ours: Run) -> float:
    a, b = reference.logits, ours.logits[: reference.logits.shape[0]]
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
