"""--image-size and --max-tiles: fewer tiles, cut as transformers cuts them, through an mmproj copy that differs in one key."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import SOURCE_DTYPES
from PIL import Image
from typer.testing import CliRunner

from smolcli.cli.app import app
from smolcli.runtime.gguf.gguf_file import read_gguf
from smolcli.runtime.vision.image_tiles import (
    PREPROC_KEY,
    TileGrid,
    TileSize,
    edge_for_image_size,
    edge_for_max_tiles,
    tile_grid,
)
from smolcli.runtime.vision.mmproj_variant import KEPT, variant_files, with_longest_edge

from cli_checks import one_line_error
from reference import GGUFRun, TransformersReference, max_abs_diff

IMAGE_PROMPT = "<|im_start|>User:<image>What is in the picture?<end_of_utterance>\nAssistant:"
SHAPES = [(1024, 768), (768, 1024), (800, 800), (1920, 1080), (300, 1200), (640, 97), (1001, 999)]


@pytest.mark.reference
@pytest.mark.parametrize("tile,edge", [(512, 2048), (512, 1024), (384, 1536), (384, 1152), (384, 768)])
def test_tile_grid_is_transformers_grid(tile, edge):
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    processor = Idefics3ImageProcessorPil(size={"longest_edge": edge}, max_image_size={"longest_edge": tile})
    for width, height in SHAPES:
        out = processor(Image.new("RGB", (width, height)), return_row_col_info=True)
        rows, cols = out["rows"][0][0], out["cols"][0][0]
        assert tile_grid(width, height, edge, tile) == TileGrid(rows, cols), (width, height)


def test_image_size_rounds_up_to_whole_tiles_and_refuses_one_tile():
    size = TileSize(tile=512, default_edge=2048)
    assert edge_for_image_size(1024, size) == 1024
    assert edge_for_image_size(1100, size) == 1536
    with pytest.raises(Exception, match="image_size=1024 or more"):
        edge_for_image_size(600, size)


def test_max_tiles_picks_the_largest_edge_within_the_budget():
    size = TileSize(tile=512, default_edge=2048)
    photo = [(1024, 768)]  # 4x3 tiles at 2048, 3x3 at 1536 (1152 high), 2x2 at 1024
    assert edge_for_max_tiles(photo, 12, size) == 2048
    assert edge_for_max_tiles(photo, 11, size) == 1536
    assert edge_for_max_tiles(photo, 9, size) == 1536
    assert edge_for_max_tiles(photo, 8, size) == 1024
    assert edge_for_max_tiles(photo, 4, size) == 1024
    banner = [(2000, 400)]  # 4x1 at 2048, 3x1 at 1536
    assert edge_for_max_tiles(banner, 3, size) == 1536
    assert edge_for_max_tiles(photo + banner, 9, size) == 1536  # every image within the budget
    assert edge_for_max_tiles(photo + banner, 12, size) == 2048
    with pytest.raises(Exception, match="max_tiles=4 or more"):
        edge_for_max_tiles(photo, 3, size)


@pytest.fixture(scope="session")
def reference(hf_checkpoint):
    return TransformersReference(hf_checkpoint("SmolVLM", SOURCE_DTYPES["SmolVLM"]))


@pytest.mark.reference
@pytest.mark.parametrize("edge", [144, 192])
@pytest.mark.parametrize("case", ["photo", "tall"])
def test_a_larger_edge_matches_transformers_at_that_size(edge, case, reference, converted, images, tmp_path):
    """The tiny model's own edge is two 48-px tiles; 144 and 192 cut three and four along the longest side."""
    pair = converted("F32", "F32")
    variant = with_longest_edge(read_gguf(pair.mmproj), edge, folder=tmp_path)
    expected = reference.run(IMAGE_PROMPT, [images[case]], longest_edge=edge)
    run = GGUFRun(pair.model, variant.path, reference.image_token_id)
    try:
        ours = run.run(IMAGE_PROMPT, [images[case]])
    finally:
        run.close()
    assert ours.token_ids == expected.token_ids
    default = reference.run(IMAGE_PROMPT, [images[case]])
    assert len(expected.token_ids) > len(default.token_ids)  # more tiles than at the model's own size
    assert max_abs_diff(expected, ours) < 1e-2


def test_the_copy_differs_in_the_one_key_only(tiny_pair, tmp_path):
    source = read_gguf(tiny_pair[1])
    variant = with_longest_edge(source, 192, folder=tmp_path)
    assert variant.metadata[PREPROC_KEY] == 192 and source.metadata[PREPROC_KEY] == 96
    original, copy = np.fromfile(source.path, np.uint8), np.fromfile(variant.path, np.uint8)
    assert original.size == copy.size
    changed = np.flatnonzero(original != copy)
    assert changed.size and changed.max() - changed.min() < 4
    assert with_longest_edge(source, 96, folder=tmp_path) is source  # the model's own size needs no copy


def test_copies_are_reused_and_only_the_last_few_kept(tiny_pair, tmp_path):
    source = read_gguf(tiny_pair[1])
    first = with_longest_edge(source, 144, folder=tmp_path)
    assert with_longest_edge(source, 144, folder=tmp_path).path == first.path
    for edge in (192, 240, 288, 336):
        with_longest_edge(source, edge, folder=tmp_path)
    kept = sorted(read_gguf(p).metadata[PREPROC_KEY] for p in variant_files(tmp_path))
    assert len(kept) == KEPT and kept == [240, 288, 336]


def test_a_file_without_the_key_is_refused(tiny_pair, tmp_path):
    with pytest.raises(Exception, match="convert the checkpoint again"):
        with_longest_edge(read_gguf(tiny_pair[0]), 144, folder=tmp_path)


@pytest.fixture(scope="module")
def four_tile_model(tiny_pair, tmp_path_factory):
    """The tiny pair as a model whose own edge is four tiles (192 px), so --max-tiles has room to cut."""
    folder = tmp_path_factory.mktemp("four-tile")
    shutil.copy(tiny_pair[0], folder / tiny_pair[0].name)
    variant = with_longest_edge(read_gguf(tiny_pair[1]), 192, folder=tmp_path_factory.mktemp("variants"))
    shutil.copy(variant.path, folder / tiny_pair[1].name)
    return folder


def ask_json(model, image, *args):
    result = CliRunner().invoke(
        app,
        [
            "ask",
            "-m",
            str(model),
            "-i",
            str(image),
            "-n",
            "2",
            "--threads",
            "1",
            "--json",
            "--no-cache",
            *args,
            "Describe.",
        ],
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_max_tiles_cuts_fewer_tiles_through_the_cli(four_tile_model, images):
    own = ask_json(four_tile_model, images["square"])
    assert own["usage"]["images_encoded"] == 16 + 1 and own["image_longest_edge"] == 192
    cut = ask_json(four_tile_model, images["square"], "--max-tiles", "9")
    assert cut["usage"]["images_encoded"] == 9 + 1 and cut["image_longest_edge"] == 144
    assert cut["usage"]["image_tokens"] < own["usage"]["image_tokens"]
    sized = ask_json(four_tile_model, images["square"], "--image-size", "96")
    assert sized["usage"]["images_encoded"] == 4 + 1 and sized["image_longest_edge"] == 96
    rounded = ask_json(four_tile_model, images["square"], "--image-size", "100")  # up to whole 48-px tiles: 144
    assert rounded["usage"]["images_encoded"] == 9 + 1 and rounded["image_longest_edge"] == 144


@pytest.mark.parametrize(
    "args,words",
    [
        (["--max-tiles", "3"], ["--max-tiles 4 or more"]),
        (["--image-size", "40"], ["--image-size 96 or more"]),
        (["--image-size", "144", "--max-tiles", "9"], ["not both"]),
        (["--max-tiles", "0"], ["at least 1"]),
    ],
)
def test_impossible_detail_settings_fail_in_one_line(four_tile_model, images, args, words):
    result = CliRunner().invoke(app, ["ask", "-m", str(four_tile_model), "-i", str(images["square"]), *args, "Hi"])
    one_line_error(result, *words)


def test_cache_commands_show_and_remove_the_copies(four_tile_model, images):
    ask_json(four_tile_model, images["square"], "--max-tiles", "9")
    info = CliRunner().invoke(app, ["cache", "info"])
    assert "mmproj copies for other image sizes: 1 in" in info.stdout
    cleared = CliRunner().invoke(app, ["cache", "clear"])
    assert "removed 1 mmproj copies" in cleared.stdout
    assert "copies for other image sizes: 0 in" in CliRunner().invoke(app, ["cache", "info"]).stdout


def tiles_encoded_in_chat(model, images, *detail: str) -> int:
    """A square image given with -i, a wide one attached later: how many chunks the encoder ran."""
    result = CliRunner().invoke(
        app,
        [
            "chat",
            "-m",
            str(model),
            "-i",
            str(images["square"]),
            *detail,
            "--threads",
            "1",
            "-n",
            "2",
            "--no-cache",
            "--stats",
        ],
        input=f"Describe.\n/image {images['wide']}\nAnd this one?\n",
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stderr.strip().splitlines()[-1])["images_encoded"]


def test_chat_takes_the_image_size_for_the_whole_conversation(four_tile_model, images):
    # square: 2x2 tiles at 96 px; wide (150x60): 2x1; each plus its global view
    assert tiles_encoded_in_chat(four_tile_model, images, "--image-size", "96") == (4 + 1) + (2 + 1)


def test_chat_sizes_max_tiles_from_the_images_given_with_i(four_tile_model, images):
    # 144 px for the whole conversation: square 3x3, then wide (150x60) 3x2, each plus its global view
    assert tiles_encoded_in_chat(four_tile_model, images, "--max-tiles", "9") == (9 + 1) + (6 + 1)


def test_chat_max_tiles_without_images_is_refused(four_tile_model):
    result = CliRunner().invoke(app, ["chat", "-m", str(four_tile_model), "--max-tiles", "4"], input="Hi\n")
    one_line_error(result, "--image-size")
