"""transformers' SmolVLMProcessor (with its video processor) as the reference for video prompts."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from video_clips import decode_all


def import_torchvision():
    """torchvision, importable once its two op schemas exist (tests/torchvision_shim.py)."""
    import torchvision_shim

    torchvision_shim.install()
    import torchvision

    return torchvision


class VideoReference:
    def __init__(self, checkpoint: Path):
        import_torchvision()
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
            self.processor = AutoProcessor.from_pretrained(checkpoint)
        self.sampling = json.loads((checkpoint / "preprocessor_config.json").read_text())["video_sampling"]
        self.image_token_id = self.processor.image_token_id

    def run(self, path: Path, question: str, fps=None, max_frames=None, later_turns=()):
        """(input_ids, last logits, sampled timestamps) for a clip decoded with PyAV, sampled by transformers.

        later_turns: (answer, next question) pairs after the clip's turn, for a conversation's logits.
        """
        ids, logits, timestamps, text, _ = self.run_with_pixels(path, question, fps, max_frames, later_turns)
        return ids, logits, timestamps, text

    def run_with_pixels(self, path: Path, question: str, fps=None, max_frames=None, later_turns=()):
        """run()'s results and the frames transformers fed its model, back as uint8 [frames, H, W, 3]."""
        import torch
        from transformers.video_utils import VideoMetadata

        frames, total, rate = decode_all(path)
        total = total or len(frames)  # WebM/MKV streams carry no count: every decoded frame
        metadata = VideoMetadata(total_num_frames=total, fps=rate, duration=total / rate, video_backend="pyav")
        conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        for answer, follow_up in later_turns:
            conversation += [
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                {"role": "user", "content": [{"type": "text", "text": follow_up}]},
            ]
        text = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        kwargs = {}
        if fps is not None:
            kwargs["fps"] = fps
        if max_frames is not None:
            kwargs["num_frames"] = max_frames
        inputs = self.processor(
            text=text,
            videos=[np.stack(frames)],
            video_metadata=[metadata],
            do_sample_frames=True,
            return_tensors="pt",
            **kwargs,
        )
        # the processor's own sampling rule, on the same metadata, for the frames it took
        sampler = self.processor.video_processor
        indices = sampler.sample_frames(metadata, num_frames=max_frames or sampler.num_frames, fps=fps or sampler.fps)
        timestamps = [int(index) / rate for index in indices]
        with torch.no_grad():
            logits = self.model(**inputs).logits[0, -1].numpy()
        # pixel_values are (x / 255 - mean) / std of uint8 x: undone and rounded, x comes back exactly
        mean, std = (np.asarray(v, np.float32)[:, None, None] for v in (sampler.image_mean, sampler.image_std))
        values = inputs["pixel_values"][0].numpy() * std + mean
        pixels = np.clip(np.round(values * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        return inputs["input_ids"][0].tolist(), logits, timestamps, text, pixels


def exact_attention(engine) -> None:
    """Contexts this engine creates from now on attend without flash attention.

    llama.cpp's CPU flash attention loses precision when a small batch attends over a long cache:
    a clip's frames (9 tokens each here) and the question after them are such batches. Over a
    64-frame clip's 2031 tokens that alone moves the F32 pair's last logits by 0.012 from
    transformers' (with transformers' own pixels and image features fed in: 0.0123); without it,
    with the same F16 cache, 0.0003. Text alone shows it too, once its last tokens come on their
    own, as generated tokens do (benchmarks/flash_attention_logits.py: 2000 tokens, 0.007-0.020;
    in one piece 0.0003). It stays on by default for its memory and prefill speed (engine.EngineOptions).
    """
    engine.options.flash_attention = False
