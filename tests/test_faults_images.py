"""Images the model used to see wrong with exit 0, and image reads that never ended: fixed and kept fixed.

The reference for what the model should see is transformers' SmolVLM (Idefics3) image processor.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from faults import error_line, smolcli
from PIL import Image

import smolcli as library
from smolcli.errors import BadInput
from smolcli.runtime.vision import images as image_module
from smolcli.runtime.vision.images import MAX_IMAGE_PIXELS, load_image


def _pixels(rgb) -> Image.Image:
    return Image.frombytes("RGB", (rgb.width, rgb.height), rgb.pixels)


def _processor(checkpoint: Path):
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    return Idefics3ImageProcessorPil.from_pretrained(checkpoint)


def _pixel_values(processor, image: Image.Image) -> np.ndarray:
    return np.asarray(processor(images=[[image]], return_tensors="np")["pixel_values"])


def _transparent_images(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    rgba = np.zeros((40, 56, 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (40, 56, 3))
    rgba[..., 3] = np.linspace(0, 255, 40 * 56).reshape(40, 56).astype(np.uint8)  # clear to opaque
    grey_alpha = np.stack([rng.integers(0, 256, (30, 30)), np.tile(np.linspace(0, 255, 30), (30, 1))], -1)
    palette = Image.fromarray(rng.integers(0, 4, (32, 32)).astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    paths = {"rgba": folder / "rgba.png", "la": folder / "la.png", "palette": folder / "palette.png"}
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    Image.fromarray(grey_alpha.astype(np.uint8), "LA").save(paths["la"])
    palette.save(paths["palette"], transparency=0)  # colour 0 is transparent
    return paths


@pytest.mark.reference
def test_transparent_pixels_are_composited_onto_white_as_transformers_does(tmp_path, numpy_checkpoint):
    processor = _processor(numpy_checkpoint())
    for name, path in _transparent_images(tmp_path).items():
        ours = _pixel_values(processor, _pixels(load_image(path)))
        theirs = _pixel_values(processor, Image.open(path))
        assert ours.shape == theirs.shape, name
        assert np.abs(ours - theirs).max() < 1e-6, name
    # the fully transparent corner is white, not the black Pillow's convert('RGB') gives
    corner = _pixels(load_image(tmp_path / "rgba.png")).getpixel((0, 0))
    assert corner == (255, 255, 255)


def _grey_16(folder: Path) -> tuple[dict[str, Path], Path]:
    values = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    paths = {"png": folder / "grey16.png", "tiff": folder / "grey16.tif"}
    for path in paths.values():
        Image.fromarray(values).save(path)
    eight_bit = folder / "grey8.png"
    Image.fromarray(np.round(values / 257.0).astype(np.uint8), "L").save(eight_bit)
    return paths, eight_bit


@pytest.mark.reference
def test_16_bit_greys_reach_the_model_as_their_8_bit_picture_does_through_transformers(tmp_path, numpy_checkpoint):
    """transformers' PIL processor clips a 16-bit image at 255 (convert('RGB')), as Pillow does: a grey
    gradient becomes white. What it gives for the same picture saved at 8 bits is the reference."""
    processor = _processor(numpy_checkpoint())
    paths, eight_bit = _grey_16(tmp_path)
    theirs = _pixel_values(processor, Image.open(eight_bit))
    for path in paths.values():
        assert Image.open(path).mode.startswith("I;16")
        ours = _pixel_values(processor, _pixels(load_image(path)))
        assert np.abs(ours - theirs).max() < 1e-6, path
    clipped = _pixel_values(processor, Image.open(paths["png"]))
    assert (clipped == clipped.max()).mean() > 0.9  # the clipping this fixes, in transformers itself


def test_16_bit_greys_are_scaled_not_clipped(tmp_path):
    paths, _ = _grey_16(tmp_path)
    for path in paths.values():
        grey = np.frombuffer(load_image(path).pixels, np.uint8)
        assert (grey == 255).mean() < 0.01 and 120 < grey.mean() < 135, path


def test_the_same_image_given_three_times_is_encoded_once(tiny_pair, images):
    model_path, mmproj = tiny_pair
    with library.load(model_path, mmproj=mmproj) as model:
        first = model.ask("Describe.", images=[images["photo"]], max_tokens=1)
        tiles = first.usage.images_encoded
        assert tiles > 1 and first.usage.image_cache_hits == 0
        repeated = model.ask("Compare.", images=[images["square"], images["square"], images["square"]], max_tokens=1)
        per_copy = repeated.usage.images_encoded
        # one copy encoded, the other two found under the same keys
        assert repeated.usage.image_cache_hits == 2 * per_copy
        again = model.ask("Compare.", images=[images["square"]], max_tokens=1)
        assert again.usage.images_encoded == 0 and again.usage.image_cache_hits == per_copy


def test_more_images_in_one_prompt_than_the_onnx_encoder_keeps(tiny_pair, tmp_path):
    """Ten different images in one question: each held until its tiles are encoded (the ONNX encoder once kept only
    the last eight and failed with "asked for an image it was not given"); the next question goes on."""
    model_path, mmproj = tiny_pair
    shown = []
    for index in range(10):
        path = tmp_path / f"image-{index}.png"
        Image.fromarray(np.full((50, 60 + index, 3), 20 * index, dtype=np.uint8)).save(path)
        shown.append(path)
    with library.load(model_path, mmproj=mmproj, threads=2, ctx=4096, embedding_cache=False) as model:
        answer = model.ask("Which one?", images=shown, max_tokens=1)
        assert answer.vision_engine.startswith("onnx")
        assert answer.usage.images_encoded >= 10 * 3 and answer.usage.image_cache_hits == 0
        again = model.ask("And this?", images=[shown[-1]], max_tokens=1)
        assert again.usage.image_tokens > 0 and again.usage.images_encoded + again.usage.image_cache_hits > 0


THIN = {"1x8000": (1, 8000), "200x1": (200, 1), "10x2000": (10, 2000)}


def _thin_files(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(5)
    paths = {}
    for name, (width, height) in THIN.items():
        paths[name] = folder / f"thin-{name}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3)).astype(np.uint8)).save(paths[name])
    return paths


def test_extreme_aspect_ratios_are_answered(tmp_path, tiny_pair):
    model_path, mmproj = tiny_pair
    for name, path in _thin_files(tmp_path).items():
        done = smolcli("ask", "-m", model_path, "-i", path, "-n", "2", "What is it?")
        assert done.returncode == 0, (name, done.stderr)
        assert "Traceback" not in done.stderr


@pytest.mark.reference
def test_extreme_aspect_ratios_are_cut_into_the_tiles_transformers_cuts(tmp_path, tiny_pair, numpy_checkpoint):
    processor = _processor(numpy_checkpoint())
    model_path, mmproj = tiny_pair
    with library.load(model_path, mmproj=mmproj, embedding_cache=False) as model:
        for name, path in _thin_files(tmp_path).items():
            theirs = _pixel_values(processor, Image.open(path).convert("RGB")).shape[1]  # tiles + global view
            assert model.ask("What?", images=[path], max_tokens=1).usage.images_encoded == theirs, name


def test_dev_zero_is_refused_after_the_byte_cap(tiny_pair):
    started = time.monotonic()
    done = smolcli("ask", "-m", tiny_pair[0], "-i", "/dev/zero", "hi")
    error_line(done, "/dev/zero", "the most smolcli reads for one image")
    assert time.monotonic() - started < 30


def test_stdin_is_capped_too(monkeypatch):
    monkeypatch.setattr(image_module, "MAX_IMAGE_BYTES", 1000)
    read, write = os.pipe()
    os.write(write, b"\0" * 5000)
    os.close(write)
    with open(read, "rb") as stream:
        monkeypatch.setattr("sys.stdin", type("Stdin", (), {"buffer": stream})())
        with pytest.raises(BadInput, match="stdin: more than"):
            load_image("-")


def test_a_fifo_with_no_writer_is_refused_after_a_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(image_module, "FIFO_WAIT_SECONDS", 0.3)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(BadInput, match="named pipe that nothing wrote to within 0.3 s"):
        load_image(fifo)
    assert time.monotonic() - started < 3


def test_a_fifo_with_a_writer_is_read(tmp_path, images):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    data = images["square"].read_bytes()

    def write_later():
        time.sleep(0.3)
        with open(fifo, "wb") as handle:
            handle.write(data)

    writer = threading.Thread(target=write_later)
    writer.start()
    image = load_image(fifo)
    writer.join()
    assert (image.width, image.height) == (80, 80)


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header claims width x height: a decompression bomb Pillow opens lazily."""
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


def test_a_decompression_bomb_is_one_line_without_python_warnings(tmp_path, tiny_pair):
    for width, height in ((12000, 10000), (40000, 40000)):  # over our cap; over Pillow's own error limit
        bomb = _png_claiming(tmp_path / f"bomb-{width}.png", width, height)
        done = smolcli("ask", "-m", tiny_pair[0], "-i", bomb, "hi")
        line = error_line(done, str(bomb), "pixels", "shrink it")
        assert f"{MAX_IMAGE_PIXELS:,}" in line
        assert "Warning" not in done.stderr


def test_a_symlink_loop_is_named_as_one(tmp_path, tiny_pair):
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    done = smolcli("ask", "-m", tiny_pair[0], "-i", tmp_path / "a.png", "hi")
    error_line(done, "a.png", "loop of symbolic links")


def test_a_folder_and_a_missing_file(tmp_path, tiny_pair):
    error_line(smolcli("ask", "-m", tiny_pair[0], "-i", tmp_path, "hi"), str(tmp_path), "folder")
    error_line(smolcli("ask", "-m", tiny_pair[0], "-i", tmp_path / "none.png", "hi"), "none.png", "no such image")
