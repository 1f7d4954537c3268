"""The mtmd path on our own tiles (runtime/llama/mtmd_tiles.py): mtmd is handed each tile and the global view that
transformers' resizes make, never a whole image to resize itself. Against transformers: tests/test_convert_parity.py
and tests/test_onnx_vision.py (-m reference); here, without torch, what it hands mtmd and what it falls back to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.llama.mtmd_tiles import MtmdTiles
from smolcli.runtime.vision.images import RGBImage, load_image
from smolcli.runtime.vision.mmproj_variant import variant_files
from smolcli.synthetic.images import photo_like


def tile_rows(engine: Engine, image: RGBImage) -> list[np.ndarray]:
    """Each image chunk's embeddings, in prompt order, as the engine's encoder gives them (nothing decoded)."""
    prompt = engine.tokenize("<image>", [image])
    try:
        rows = []
        for index, chunk in enumerate(prompt.chunks):
            if chunk.kind != "image":
                continue
            if engine.layout_encoder is not None:
                rows.append(engine.layout_encoder.tile_embeddings(engine.files.mmproj, chunk.image, chunk.tile))
            else:  # mtmd's own cut of the whole image
                output = engine.mtmd.encode(engine.mtmd_ctx, prompt.mtmd_chunk(index))
                flat = np.ctypeslib.as_array(output, shape=(chunk.n_tokens * engine.n_embd,))
                rows.append(flat.reshape(chunk.n_tokens, -1).copy())
        return rows
    finally:
        prompt.free()


def both_cuts(pair, image: RGBImage) -> dict[bool, list[np.ndarray]]:
    """own tiles -> the tiles' embeddings: ours handed to mtmd (True), mtmd's cut of the whole image (False)."""
    found = {}
    for own in (True, False):
        options = EngineOptions(threads=2, mtmd_own_tiles=own)
        with Engine(resolve_model_files(pair.model, pair.mmproj), options) as engine:
            assert isinstance(engine.layout_encoder, MtmdTiles) == own
            found[own] = tile_rows(engine, image)
    return found


def saved(tmp_path: Path, width: int, height: int, seed: int) -> RGBImage:
    path = tmp_path / f"{width}x{height}.png"
    photo_like(width, height, seed).save(path)
    return load_image(path)


def test_mtmd_encodes_our_tiles_as_it_would_its_own_where_neither_resizes(converted, tmp_path):
    """An image at the model's longest edge in whole tiles (96 px on the tiny model): no resize before cutting on
    either side, so our tiles are mtmd's own, bit for bit, and the global views (one 2:1 Lanczos each) too. On an
    upscaled one mtmd's resampler differs from Pillow's: the embeddings move (so the check above can fail)."""
    pair = converted("F32", "F32", "SmolVLM")
    exact = both_cuts(pair, saved(tmp_path, 96, 96, 1))
    assert len(exact[True]) == len(exact[False]) == 5  # 2x2 tiles and the global view
    for ours, theirs in zip(exact[True], exact[False], strict=True):
        assert np.array_equal(ours, theirs)
    upscaled = both_cuts(pair, saved(tmp_path, 50, 110, 3))
    assert max(float(np.abs(a - b).max()) for a, b in zip(upscaled[True], upscaled[False], strict=True)) > 1e-3


def test_the_mtmd_path_lays_prompts_out_as_mtmd_did(converted, images):
    """The same tokens in the same places as mtmd's own tokenizer wrote them, image chunks of the same sizes."""
    pair = converted("F32", "F32", "SmolVLM")
    text = "<|im_start|>User:<image>A<image>B<end_of_utterance>\nAssistant:"
    shown = [load_image(images["photo"]), load_image(images["tall"])]
    layouts = {}
    for own in (True, False):
        options = EngineOptions(threads=2, mtmd_own_tiles=own)
        with Engine(resolve_model_files(pair.model, pair.mmproj), options) as engine:
            prompt = engine.tokenize(text, shown)
            assert (prompt.handle is None) == own
            layouts[own] = [t for c in prompt.chunks for t in (c.tokens if c.kind == "text" else [-c.n_tokens])]
            prompt.free()
    assert layouts[True] == layouts[False]


def test_more_images_in_one_prompt_than_the_encoder_keeps(converted, tmp_path):
    """mtmd took any number of whole images: every image of the prompt is held until its tiles are encoded."""
    pair = converted("F32", "F32", "SmolVLM")
    shown = [saved(tmp_path, 60 + i, 50, i) for i in range(10)]
    with Engine(resolve_model_files(pair.model, pair.mmproj), EngineOptions(threads=2)) as engine:
        context = engine.new_context(4096)
        prompt = engine.tokenize("<image>" * 10 + "Which one?", shown)
        try:
            engine.evaluate(prompt, context)
        finally:
            prompt.free()
        assert engine.vision_engine == "mtmd"
        # each 96 px wide (the tiny model's longest edge), its height rounded up to two tiles: 2x2 and the global view
        assert engine.counters.images_encoded == 10 * 5


def test_an_mmproj_copy_that_cannot_be_written_leaves_mtmd_its_whole_images(
    converted, images, tmp_path, monkeypatch, capfd
):
    """The tile-edge copy of the mmproj goes to the user cache; where it cannot be written the answer still comes,
    mtmd cutting whole images as before, said once on stderr."""
    pair = converted("F32", "F32", "SmolVLM")
    files = resolve_model_files(pair.model, pair.mmproj)
    with Engine(files, EngineOptions(threads=2)) as engine:
        assert isinstance(engine.layout_encoder, MtmdTiles)
    assert len(variant_files()) == 1  # the copy, in this test's own SMOLCLI_HOME
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("SMOLCLI_HOME", str(blocked))
    capfd.readouterr()
    with Engine(files, EngineOptions(threads=2)) as engine:
        assert engine.layout_encoder is None and engine.mtmd_ctx is not None
        context = engine.new_context(1024)
        prompt = engine.tokenize("<image>Hi", [load_image(images["square"])])
        assert prompt.handle is not None  # mtmd's own chunks
        engine.evaluate(prompt, context)
        prompt.free()
        assert engine.vision_engine == "mtmd"
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("smolcli:")]
    assert len(lines) == 1 and "mtmd resizes the images itself" in lines[0], lines


@pytest.mark.parametrize("generation", ["SmolVLM", "SmolVLM2"])
def test_a_video_frame_through_the_engines_tiles_equals_the_frame_context(generation, converted, tmp_path):
    """A tile-size frame handed to MtmdTiles gives what the video path's own one-tile context gives."""
    from smolcli.runtime.video.video_prompt import FrameVision

    pair = converted("F32", "F32", generation)
    with Engine(resolve_model_files(pair.model, pair.mmproj), EngineOptions(threads=2)) as engine:
        vision = FrameVision(engine, engine.files.mmproj, mtmd_only=True)
        try:
            frame = saved(tmp_path, vision.tile, vision.tile, 5)
            prompt = vision.tokenize(engine, frame)
            index = [i for i, c in enumerate(prompt.chunks) if c.kind == "image"][-1]
            output = engine.images.encode_mtmd(prompt.mtmd_chunk(index), None, vision.ctx)
            n_tokens = prompt.chunks[index].n_tokens
            theirs = np.ctypeslib.as_array(output, shape=(n_tokens * engine.n_embd,)).reshape(n_tokens, -1).copy()
            prompt.free()
        finally:
            vision.close()
        ours = engine.layout_encoder.frame_embeddings(engine.files.mmproj, frame)
    assert np.array_equal(ours, theirs)
