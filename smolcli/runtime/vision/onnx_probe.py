"""The int8 graph's self-check: its embeddings against the fp32 graph's on a fixed synthetic probe image.

An int8 form is chosen from measurements on some checkpoints; a fine-tune can have statistics none of them had.
When an int8 graph is built, both graphs encode the same probe tiles (smooth gradients, a disc, stripes as fine as
text, a little noise: the kinds of content the measured images have) and the worst per-tile cosine decides whether
the int8 graph is kept (onnx_vision.build_or_reuse). The fp32 graph is built in a temporary folder (its weights
streamed to an external file as it is made: a 2.2B encoder's float32 weights are near protobuf's 2 GB limit) and
run a layer at a time (layered_run): a session holding the whole fp32 tower (372 MB on 256M, 1.7 GB on 2.2B) set a
first run's peak at 2.4x a later run's; one layer's session holds 28 MB on 256M. Removed after its one run.
Since graph format 10 that run (reference_embeddings) comes before the int8 graph is built: the same run gathers
the GPTQ rounding's inputs (onnx_gptq.Calibration, layered_run's observer) and the check reuses its embeddings.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from smolcli.runtime.vision.image_preprocess import tile_pixels
from smolcli.runtime.vision.onnx_graph import LAYER_END, VisionWeights, build_model

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


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # a few runs: MLAS's packed copy of every weight would add to what the check holds, for no speed worth it;
    # nor would the memory pattern ORT plans after a run (a block as large as the run's buffers, beside the arena;
    # the arena itself is kept: without it a 256M int8 run peaked 55 MB higher)
    options.add_session_config_entry("session.disable_prepacking", "1")
    options.enable_mem_pattern = False
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_file(path: Path, pixels: np.ndarray, threads: int) -> np.ndarray:
    """A built graph's embeddings of these pixels; its session is gone when this returns."""
    session = _session(path, threads)
    # a tile per run, as the encoder runs them: the arena holds one tile's activations, not the probe's three
    return np.concatenate([session.run(None, {"pixel_values": pixels[i : i + 1]})[0] for i in range(len(pixels))])


def layer_pieces(graph, layers: int) -> list[tuple[str, list, str]]:
    """The graph cut after each encoder layer: (input name, nodes, output name) in order, from pixel_values
    (patches, positions and layer 0) to embeddings (the last layer's successor: post-norm and connector).

    Each piece reads only its input and initializers (ValueError otherwise: a graph these cuts do not fit)."""
    ends = {f"v.blk.{bid}.{LAYER_END}_": bid for bid in range(layers)}
    pieces, nodes, source = [], [], graph.input[0].name
    for node in graph.node:
        nodes.append(node)
        if any(node.name.startswith(end) for end in ends) or node.output[0] == graph.output[0].name:
            pieces.append((source, nodes, node.output[0]))
            nodes, source = [], node.output[0]
    constants = {t.name for t in graph.initializer}
    for source, piece, _ in pieces:
        made = {source, "", *constants, *(name for node in piece for name in node.output)}
        stray = {name for node in piece for name in node.input} - made
        if stray:
            raise ValueError(f"a layer piece of the graph reads {sorted(stray)[:3]} from an earlier piece")
    if len(pieces) != layers + 1 or nodes:
        raise ValueError(f"the graph does not cut into {layers} layers")
    return pieces


def layered_run(path: Path, layers: int, pixels: np.ndarray, threads: int, observer=None) -> np.ndarray:
    """A built graph's embeddings of these pixels, computed a piece (layer_pieces) at a time: each piece saved
    beside the graph (its initializers stay in the graph's external weights file), loaded, run on every tile's
    hidden states, freed. The same nodes on the same weights as _run_file: the same numbers, but only one layer's
    weights are held at a time.

    observer (onnx_gptq.Calibration): the values of its `watched` tensors are handed to observer.add(name, values)
    tile by tile as each piece runs, and observer.piece_done() is called once the piece's session is freed."""
    from smolcli.runtime.vision import onnx_proto
    from smolcli.util.heap import return_freed_memory

    model = onnx_proto.load(path)
    float32 = onnx_proto.messages().TensorProto.FLOAT
    constants = {t.name: t for t in model.graph.initializer}
    states = [pixels[i : i + 1] for i in range(len(pixels))]  # a tile per run, as _run_file
    piece_path = path.with_name("piece.onnx")  # beside the graph: the external data's location resolves the same
    for source, nodes, target in layer_pieces(model.graph, layers):
        used = {name for node in nodes for name in node.input if name in constants}
        graph = onnx_proto.graph(
            nodes,
            f"piece-{target}",
            [onnx_proto.value_info(source, float32, None)],
            [onnx_proto.value_info(target, float32, None)],
            [constants[name] for name in sorted(used)],
        )
        made = {name for node in nodes for name in node.output}
        extra = sorted(made & observer.watched) if observer is not None else []
        graph.output.extend(onnx_proto.value_info(name, float32, None) for name in extra)
        onnx_proto.save(onnx_proto.model(graph, model.opset_import, model.ir_version), piece_path)
        session = _session(piece_path, threads)
        outputs = [target, *extra]
        for i, state in enumerate(states):
            target_value, *values = session.run(outputs, {source: state})
            states[i] = target_value
            for name, value in zip(extra, values, strict=True):
                observer.add(name, value)
            del values
        del session
        return_freed_memory()
        if observer is not None:
            observer.piece_done()
            return_freed_memory()
    piece_path.unlink(missing_ok=True)
    return np.concatenate(states)


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


def probe_cosine_of_file(
    weights: VisionWeights, int8_path: Path, threads: int = 2, expected: np.ndarray | None = None
) -> float:
    """probe_cosine for an int8 graph already built to a file, against `expected` (the fp32 graph's probe
    embeddings, reference_embeddings: the GPTQ calibration's run gives them) or, without it, a reference run
    made now, before the int8 graph's session: the check holds one layer's float32 weights, then the int8 graph's,
    and never a model in memory."""
    if expected is None:
        expected = reference_embeddings(weights, threads)
    return per_tile_cosine(expected, _run_file(int8_path, probe_pixels(weights), threads))


def reference_embeddings(weights: VisionWeights, threads: int = 2, observer=None) -> np.ndarray:
    """The fp32 graph's embeddings of the probe tiles: built with its weights streamed to a temporary file
    (onnx_graph.WeightsFile) and run a layer at a time (layered_run), so that it holds one layer's float32 weights and
    never a model in memory. observer: layered_run's, its `linear` the fp32 graph's (it records the inputs to watch)."""
    from smolcli.runtime.vision import onnx_proto
    from smolcli.runtime.vision.onnx_graph import WeightsFile

    pixels = probe_pixels(weights)
    with tempfile.TemporaryDirectory(prefix="smolcli-probe-") as folder:
        weights_file = WeightsFile(Path(folder) / "weights.data")
        try:
            if observer is None:
                reference = build_model(weights, weights_file=weights_file)
            else:
                reference = build_model(weights, observer.linear, weights_file=weights_file)
        finally:
            weights_file.close()
        onnx_proto.save(reference, Path(folder) / "model.onnx")
        del reference
        return layered_run(Path(folder) / "model.onnx", weights.layers, pixels, threads, observer)
