"""The int8 graph's self-check: its embeddings against the fp32 graph's on a fixed synthetic probe image.

An int8 form is chosen from measurements on some checkpoints; a fine-tune can have statistics none of them had.
When an int8 graph is built, both graphs encode the same probe tiles (smooth gradients, a disc, stripes as fine as
text, a little noise: the kinds of content the measured images have) and the worst per-tile cosine decides whether
the int8 graph is kept (onnx_vision.build_or_reuse). The fp32 graph is built in a temporary folder (its weights
streamed to an external file as it is made: a 2.2B encoder's float32 weights are near protobuf's 2 GB limit) and
removed after its one run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from smolcli.runtime.vision.image_preprocess import tile_pixels
from smolcli.runtime.vision.onnx_graph import VisionWeights, build_model

PROBE_BOUND = 0.999  # per-tile cosine to fp32 an int8 graph keeps on the probe, as the tests hold on real images
PROBE_SEED = 21


def probe_tiles(tile: int, seed: int = PROBE_SEED) -> list[Image.Image]:
    """Three tile-sized RGB images: a smooth scene (gradients and a disc), a detailed one (fine stripes, noise) and a
    saturated one (two near-pure colours meeting at a curved edge: a large image's typical tile, the one where the
    int8 form's error on SmolVLM-256M's shapes with large-gain channels was largest)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:tile, 0:tile].astype(np.float32) / tile
    disc = ((x - 0.5) ** 2 + (y - 0.45) ** 2 < 0.09).astype(np.float32)
    scene = np.stack([127 + 120 * np.sin(3.1 * x + 1), 127 + 120 * np.cos(2.3 * y), 255 * disc], axis=-1)
    stripes = 255.0 * ((np.floor(x * tile / 2) + np.floor(y * tile / 6)) % 2)
    detail = np.stack([stripes, 255 - stripes, 127 + 60 * np.sin(20 * x * y)], axis=-1)
    detail = detail + rng.normal(0, 24, detail.shape)
    scene = scene + rng.normal(0, 8, scene.shape)
    inside = ((x - 1.0) ** 2 + (y - 1.1) ** 2 < 0.7)[..., None]
    saturated = np.where(inside, [60.0, 220.0, 250.0], [20.0, 235.0, 5.0]) + rng.normal(0, 6, (tile, tile, 3))
    return [Image.fromarray(np.clip(p, 0, 255).astype(np.uint8)) for p in (scene, detail, saturated)]


def probe_pixels(weights: VisionWeights) -> np.ndarray:
    """float32 [3, 3, tile, tile]: the probe tiles, rescaled and normalized as every tile is."""
    return np.stack([tile_pixels(piece, weights.mean, weights.std) for piece in probe_tiles(weights.tile)])


def _run(model, pixels: np.ndarray, threads: int, keep: bool = False) -> np.ndarray:
    """An in-memory model's embeddings of these pixels; keep: save a copy (saving moves the weights out of the
    proto)."""
    import onnx

    if keep:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    with tempfile.TemporaryDirectory(prefix="smolcli-probe-") as folder:
        path = Path(folder) / "model.onnx"
        onnx.save(model, path, save_as_external_data=True, location="weights.data", size_threshold=1024)
        return _run_file(path, pixels, threads)


def _run_file(path: Path, pixels: np.ndarray, threads: int) -> np.ndarray:
    """A built graph's embeddings of these pixels; its session is gone when this returns."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # a few runs: MLAS's packed copy of every weight would add to what the check holds, for no speed worth it
    options.add_session_config_entry("session.disable_prepacking", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # a tile per run, as the encoder runs them: the arena holds one tile's activations, not the probe's three
    return np.concatenate([session.run(None, {"pixel_values": pixels[i : i + 1]})[0] for i in range(len(pixels))])


def per_tile_cosine(reference: np.ndarray, ours: np.ndarray) -> float:
    """The worst tile's cosine between two [tiles, tokens, width] embeddings."""
    a, b = reference.reshape(len(reference), -1).astype(np.float64), ours.reshape(len(ours), -1).astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def probe_cosine(weights: VisionWeights, int8_model, threads: int = 2) -> float:
    """The int8 model's worst per-tile cosine to the fp32 graph of the same weights, on the probe tiles
    (int8_model left as it is: the caller saves it next)."""
    pixels = probe_pixels(weights)
    reference = _run(build_model(weights), pixels, threads)
    return per_tile_cosine(reference, _run(int8_model, pixels, threads, keep=True))


def probe_cosine_of_file(weights: VisionWeights, int8_path: Path, threads: int = 2) -> float:
    """probe_cosine for an int8 graph already built to a file. The fp32 reference is built the same way, its
    weights written to a temporary file as it is made (onnx_graph.WeightsFile), and the two sessions run one after
    the other, so the check holds one session's weights at a time and never a model in memory."""
    import onnx

    from smolcli.runtime.vision.onnx_graph import WeightsFile

    pixels = probe_pixels(weights)
    with tempfile.TemporaryDirectory(prefix="smolcli-probe-") as folder:
        weights_file = WeightsFile(Path(folder) / "weights.data")
        try:
            reference = build_model(weights, weights_file=weights_file)
        finally:
            weights_file.close()
        onnx.save(reference, Path(folder) / "model.onnx")
        del reference
        expected = _run_file(Path(folder) / "model.onnx", pixels, threads)
    return per_tile_cosine(expected, _run_file(int8_path, pixels, threads))
