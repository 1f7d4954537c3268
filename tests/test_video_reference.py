"""Video prompts against transformers' own SmolVLMProcessor and video processor on a tiny SmolVLM2 checkpoint.

transformers gets every frame (decoded with PyAV) and its VideoMetadata, and samples and resizes
them itself (do_sample_frames=True). Ours: the same clip through smolcli's planner, decoder and engine.
"""

from __future__ import annotations

import numpy as np
import pytest
from video_clips import make_clip
from video_reference import VideoReference, exact_attention

from smolcli.api.video import video_sampling
from smolcli.convert import convert_checkpoint
from smolcli.models.smolvlm_video import VIDEO_MARKER, place_video, video_text
from smolcli.runtime.chat.prompting import first_turn
from smolcli.runtime.gguf.gguf_file import read_gguf
from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.video.clip import open_clip
from smolcli.runtime.video.video_prompt import FrameVision, evaluate_video_prompt, tokenize_video_prompt

pytestmark = pytest.mark.reference

F32_BOUND = 1e-2  # every clip, the 64-frame one included (measured: 0.0002-0.0004 with exact attention)
# llama.cpp's CPU flash attention (the engine's default) loses precision when a few tokens attend over a long
# cache (video_reference.exact_attention): 0.0125 on the 64-frame clip's 2031 tokens
FLASH_ATTENTION_LONG_BOUND = 2e-2
QUESTION = "What happens in the video?"
CLIPS = {  # name: (file, seconds, frame rate, width, height)
    "mp4-3s": ("a.mp4", 3, 10, 64, 48),
    "webm-tall": ("b.webm", 2.5, 8, 40, 60),
    "gif-short": ("c.gif", 1.5, 10, 32, 32),  # under 2 s
    "mkv-5s": ("d.mkv", 5, 6, 50, 40),
    # longer than max_frames seconds: first and last second skipped; larger than the 96 px first resize
    "mov-70s": ("e.mov", 70, 2, 160, 120),
}
OVERRIDES = {"default": (None, None), "fps2-max5": (2, 5)}


@pytest.fixture(scope="session")
def video_setup(workdir, numpy_checkpoint):
    checkpoint = numpy_checkpoint("SmolVLM2", "F32")
    reference = VideoReference(checkpoint)
    pair = convert_checkpoint(checkpoint, workdir / "video-parity", "F32", "F32", name="tiny-SmolVLM2")
    engine = Engine(resolve_model_files(pair.model, None), EngineOptions(threads=2))
    exact_attention(engine)  # what is compared is the video's preparation, not llama.cpp's F16 attention sums
    vision = FrameVision(engine, read_gguf(pair.mmproj))
    folder = workdir / "video-parity-clips"
    folder.mkdir(exist_ok=True)
    clips = {name: make_clip(folder / spec[0], *spec[1:]) for name, spec in CLIPS.items()}
    yield reference, engine, vision, clips, read_gguf(pair.mmproj), pair
    vision.close()
    engine.close()


def _our_logits(engine, vision, reference, frames, duration):
    timestamps = [frame.timestamp for frame in frames]
    text = first_turn(place_video(QUESTION)).replace(VIDEO_MARKER, video_text(timestamps, duration))
    context = engine.new_context(4096)
    prompt = tokenize_video_prompt(engine, vision, text, [], [frame.image for frame in frames])
    try:
        evaluate_video_prompt(engine, context, vision, prompt)
        ids = prompt.token_ids(reference.image_token_id)
        return ids, context.last_logits()
    finally:
        prompt.free()
        context.free()


@pytest.mark.parametrize("override", list(OVERRIDES))
@pytest.mark.parametrize("clip", list(CLIPS))
def test_video_prompt_matches_transformers(clip, override, video_setup):
    reference, engine, vision, clips, mmproj, _ = video_setup
    fps, max_frames = OVERRIDES[override]
    expected_ids, expected_logits, expected_times, _, expected_pixels = reference.run_with_pixels(
        clips[clip], QUESTION, fps, max_frames
    )

    sampling = video_sampling(mmproj, fps, max_frames)
    assert sampling.fps == (fps or reference.sampling["fps"])
    assert sampling.max_frames == (max_frames or reference.sampling["max_frames"])
    with open_clip(clips[clip]) as opened:
        plan = opened.plan(sampling)
        frames = opened.frames(plan, sampling)
    assert [frame.timestamp for frame in frames] == pytest.approx(expected_times, abs=5e-4)
    # the very pixels transformers' video processor gave its model, frame for frame
    ours = np.stack([np.frombuffer(f.image.pixels, np.uint8).reshape(f.image.height, f.image.width, 3) for f in frames])
    assert ours.shape == expected_pixels.shape
    assert np.array_equal(ours, expected_pixels)

    ids, logits = _our_logits(engine, vision, reference, frames, plan.duration)
    assert ids == expected_ids
    error = np.abs(logits[: expected_logits.shape[0]] - expected_logits).max()
    print(clip, "ONNX fp32 frames max |dlogit|", round(float(error), 5))  # shown with -s
    assert error <= F32_BOUND
    assert np.abs(expected_logits).max() > 0.5  # logits of order one, so the bound means something


def test_long_clip_with_flash_attention_stays_near_transformers(video_setup):
    """The engine as ask runs it (llama.cpp's flash attention): the long clip within 2e-2, not 1e-2."""
    reference, _, _, clips, mmproj, pair = video_setup
    _, expected_logits, _, _ = reference.run(clips["mov-70s"], QUESTION)
    sampling = video_sampling(mmproj, None, None)
    with open_clip(clips["mov-70s"]) as opened:
        plan = opened.plan(sampling)
        frames = opened.frames(plan, sampling)
    engine = Engine(resolve_model_files(pair.model, None), EngineOptions(threads=2))
    try:
        vision = FrameVision(engine, read_gguf(pair.mmproj))
        try:
            _, logits = _our_logits(engine, vision, reference, frames, plan.duration)
        finally:
            vision.close()
    finally:
        engine.close()
    assert len(frames) == 64
    assert np.abs(logits[: expected_logits.shape[0]] - expected_logits).max() <= FLASH_ATTENTION_LONG_BOUND


def test_a_frame_global_view_embeds_as_transformers_does(video_setup):
    """One frame's global-view embeddings (what the cache stores) against transformers' image features."""
    import torch

    reference, engine, vision, clips, mmproj, _ = video_setup
    sampling = video_sampling(mmproj, None, None)
    with open_clip(clips["mp4-3s"]) as opened:
        plan = opened.plan(sampling)
        frame = opened.frames(plan, sampling)[1]
    prompt = vision.tokenize(engine, frame.image)
    try:
        index = [i for i, c in enumerate(prompt.chunks) if c.kind == "image"][-1]
        embeddings = engine.images.encode_mtmd(prompt.mtmd_chunk(index), None, vision.ctx)
        n_tokens = prompt.chunks[index].n_tokens
        ours = np.ctypeslib.as_array(embeddings, shape=(n_tokens * 256,)).reshape(n_tokens, 256).copy()
    finally:
        prompt.free()
    pixels = np.frombuffer(frame.image.pixels, np.uint8).reshape(48, 48, 3).astype(np.float32)
    tensor = torch.from_numpy((pixels / 255 - 0.5) / 0.5).permute(2, 0, 1)[None, None]
    with torch.no_grad():
        features = reference.model.model.get_image_features(pixel_values=tensor)
    features = features.pooler_output if hasattr(features, "pooler_output") else features
    if isinstance(features, (list, tuple)):
        features = torch.cat([torch.as_tensor(f) for f in features])
    theirs = features.reshape(-1, 256).numpy()
    assert ours.shape == theirs.shape
    # the same pixels: mtmd took the tile-size frame as it is (a resize would move these by far more)
    assert np.abs(ours - theirs).max() < 5e-3


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def test_a_chat_video_turn_and_its_follow_up_match_transformers(video_setup):
    """Chat.send(video=) and a follow-up after it: each turn's next-token log-probabilities against transformers'
    logits on the whole conversation so far (the clip's turn, an answer, the follow-up)."""
    import smolcli

    reference, engine, _, clips, _, _ = video_setup
    clip = clips["mkv-5s"]
    _, first_logits, _, _ = reference.run(clip, QUESTION)
    with smolcli.load(engine.files.model.path, threads=2, embedding_cache=False) as model:
        with model.chat(max_tokens=1) as chat:
            first = chat.send(QUESTION, video=clip, logprobs=5)
        with model.chat(max_tokens=1) as chat:
            chat.replay([(QUESTION, [], "Shapes move.", clip)])
            follow = chat.send("And then?", logprobs=5)
    _, follow_logits, _, _ = reference.run(clip, QUESTION, later_turns=[("Shapes move.", "And then?")])
    for answer, logits in ((first, first_logits), (follow, follow_logits)):
        expected = _log_softmax(logits)
        top = answer.logprobs[0].top_logprobs
        assert [item.id for item in top][:1] == [int(np.argmax(logits))]
        # log-softmax moves by at most twice the logits' largest difference
        assert max(abs(item.logprob - expected[item.id]) for item in top) <= 2 * F32_BOUND
    assert first.video["frames_used"] == 5


@pytest.mark.parametrize("clip", ["mp4-3s", "mov-70s"])
def test_frames_through_onnx_fp32_match_transformers(clip, video_setup, tmp_path):
    """With the ONNX encoder a frame is our own one-chunk image (no mtmd context), and the logits stay within
    the F32 bound of transformers', the 64-frame clip included."""
    from smolcli.runtime.vision.onnx_vision import OnnxVisionEncoder

    reference, _, _, clips, mmproj, pair = video_setup
    expected_ids, expected_logits, _, _ = reference.run(clips[clip], QUESTION)
    sampling = video_sampling(mmproj, None, None)
    with open_clip(clips[clip]) as opened:
        plan = opened.plan(sampling)
        frames = opened.frames(plan, sampling)
    encoder = OnnxVisionEncoder(2, "fp32", folder=tmp_path)
    with Engine(resolve_model_files(pair.model, None), EngineOptions(threads=2, vision_encoder=encoder)) as engine:
        exact_attention(engine)
        vision = FrameVision(engine, mmproj)
        assert vision.onnx and vision.ctx is None and engine.mtmd_ctx is None
        ids, logits = _our_logits(engine, vision, reference, frames, plan.duration)
        assert engine.vision_engine == "onnx-fp32" and engine.counters.images_encoded == len(frames)
    assert ids == expected_ids
    error = np.abs(logits[: expected_logits.shape[0]] - expected_logits).max()
    print(clip, "ONNX fp32 frames max |dlogit|", round(float(error), 5))  # shown with -s
    assert error <= F32_BOUND


def test_a_checkpoints_own_video_sampling_matches_transformers(tmp_path):
    """A fine-tune's preprocessor_config.json video_sampling (0.5 fps, at most 8 frames), not the releases' 1 fps
    and 64: convert writes it into the mmproj and a 12 s clip gets transformers' frames (6, not 12), their
    timestamps, its prompt tokens and logits within 1e-2; through the library's ask as well."""
    import json

    import smolcli
    from smolcli.synthetic.random_checkpoint import write_random_checkpoint

    checkpoint = write_random_checkpoint(tmp_path / "ckpt", "tiny", "SmolVLM2", "F32", seed=5)
    config = json.loads((checkpoint / "preprocessor_config.json").read_text())
    config["video_sampling"].update(fps=0.5, max_frames=8)
    (checkpoint / "preprocessor_config.json").write_text(json.dumps(config))
    pair = convert_checkpoint(checkpoint, tmp_path / "pair", "F32", "F32", name="tiny-sampling")
    clip = make_clip(tmp_path / "clip.mp4", 12, 10, 64, 48)
    reference = VideoReference(checkpoint)
    expected_ids, expected_logits, expected_times, _ = reference.run(clip, QUESTION)
    assert len(expected_times) == 6  # the releases' rule takes 12

    mmproj = read_gguf(pair.mmproj)
    sampling = video_sampling(mmproj, None, None)
    assert (sampling.fps, sampling.max_frames) == (0.5, 8)
    with open_clip(clip) as opened:
        plan = opened.plan(sampling)
        frames = opened.frames(plan, sampling)
    assert [frame.timestamp for frame in frames] == pytest.approx(expected_times, abs=5e-4)
    with Engine(resolve_model_files(pair.model, None), EngineOptions(threads=2)) as engine:
        exact_attention(engine)
        vision = FrameVision(engine, mmproj)
        try:
            ids, logits = _our_logits(engine, vision, reference, frames, plan.duration)
        finally:
            vision.close()
    assert ids == expected_ids
    assert np.abs(logits[: expected_logits.shape[0]] - expected_logits).max() <= F32_BOUND
    with smolcli.load(pair.model, threads=2, embedding_cache=False) as model:
        answer = model.ask(QUESTION, video=clip, max_tokens=1)
    assert answer.video["frames_used"] == 6 and answer.usage.prompt_tokens == len(expected_ids)
