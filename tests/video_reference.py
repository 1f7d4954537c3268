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
        return inputs["input_ids"][0].tolist(), logits, timestamps, text
