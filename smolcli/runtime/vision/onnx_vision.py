"""The vision encoder + connector through ONNX Runtime, for the CPU: what the engine asks for each image tile.

The ONNX file is built from the mmproj's own tensors (onnx_graph, onnx_int8) once and kept in the
user cache under the mmproj's content digest and the precision; a later run only loads it. The
build is staged under a hidden name and renamed into place, so a killed build leaves nothing.

An image is preprocessed (image_preprocess) and all its tiles are encoded on the first tile the engine
asks for, one session run per tile; the rest are handed out from memory, then forgotten. One tile per
run keeps ONNX Runtime's arena at one tile's activations (256M: about 45 MB; all 13 tiles of a photo
in one run took 1.7 GB) at no cost in speed: a tile's 1024 rows already fill the int8 kernels.

bf16 runs the fp32 graph (the same cached build) through OpenVINO instead (openvino_encoder, an optional extra
imported only then): the encoder is otherwise the same, and reports itself as openvino-bf16.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from smolcli.errors import ModelFileError
from smolcli.models.dims import VisionDims
from smolcli.models.smolvlm_image_layout import TileSlot, image_prompt
from smolcli.runtime.gguf.file_identity import content_digest
from smolcli.runtime.gguf.gguf_file import GGUFSummary
from smolcli.runtime.vision.embedding_cache import EmbeddingCache, EmbeddingKey, image_digest
from smolcli.runtime.vision.image_preprocess import tile_images, tile_pixels
from smolcli.runtime.vision.image_tiles import PREPROC_KEY, TILE_KEY, TileGrid, fit_for_tiling, tile_grid
from smolcli.runtime.vision.images import RGBImage
from smolcli.runtime.vision.prompt_images import PromptImages
from smolcli.util.heap import return_freed_memory
from smolcli.util.slow_note import note_if_slow
from smolcli.util.user_cache import cache_dir, remove_all, size_on_disk

VISION_ENGINES = ("auto", "onnx", "mtmd")
PRECISIONS = ("int8", "bf16", "fp32")
DEFAULT_PRECISION = "int8"
INT8_KIND = "outlier-asym-fp32-o"  # see onnx_int8: the int8 form no worse than Q8_0 at int8 speed
BUILD_NOTE_AFTER_S = 10.0  # a build still running after this says so on stderr (SMOLCLI_PROGRESS_AFTER_S)
FORMAT_VERSION = 10  # bump when the graph changes: old cached files are then rebuilt under a new name


def onnx_folder() -> Path:
    return cache_dir() / "onnx-vision"


def onnxruntime_available() -> bool:
    """onnxruntime and onnx are installed. Neither is imported here: onnxruntime (20 MB) only when an image
    is encoded; onnx's generated protobuf module only to build a file (onnx_proto: the onnx package itself, 14 MB
    resident, is never imported on a build's path), so that a run that stays on mtmd holds neither."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))
    except ValueError:  # a module set to None in sys.modules: its import is blocked
        return False


WEIGHTS_FILE = "weights.data"  # the initializers beside the graph: ORT maps them, the protobuf holds none


def _build(weights, precision: str, int8_kind: str, weights_file=None, rounded=None):
    from smolcli.runtime.vision.onnx_graph import build_model
    from smolcli.runtime.vision.onnx_int8 import build_int8

    if precision == "fp32":
        return build_model(weights, weights_file=weights_file)
    return build_int8(weights, int8_kind, weights_file=weights_file, rounded=rounded)


def _build_staged(
    weights, precision: str, int8_kind: str, target: Path, check=None, bound: float = 0.0, rounded=None
) -> float | None:
    """target: <folder>/<form>/model.onnx with its weights beside it, built in a hidden folder and renamed whole.

    The weights go to their file tensor by tensor as the graph is built (onnx_graph.WeightsFile), so the build
    holds one tensor at a time, never the model; and with the weights in their own file, loading a session reads
    no 100 MB protobuf beside the initializers and MLAS's packed copy of them.
    check(staged model.onnx) -> a probe cosine, run before the rename: under `bound` the build is not kept.
    rounded: the int8 form's GPTQ-rounded weights (onnx_int8.build_int8's).
    """
    import shutil

    from smolcli.runtime.vision import onnx_proto
    from smolcli.runtime.vision.onnx_graph import WeightsFile

    built = target.parent
    built.parent.mkdir(parents=True, exist_ok=True)
    stage = built.with_name(f".building-{os.getpid()}-{built.name}")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.mkdir()
        weights_file = WeightsFile(stage / WEIGHTS_FILE)
        try:
            model = _build(weights, precision, int8_kind, weights_file, rounded)
        finally:
            weights_file.close()
        external = onnx_proto.messages().TensorProto.EXTERNAL
        if not any(t.data_location == external for t in model.graph.initializer):
            # a form built whole in memory ("dynamic", whose quantizer imports onnx anyway): saved the usual way
            import onnx

            onnx.save(
                model, stage / target.name, save_as_external_data=True, location=WEIGHTS_FILE, size_threshold=1024
            )
        else:  # its weights written already: the graph as it is, without importing onnx (onnx_proto)
            onnx_proto.save(model, stage / target.name)
        del model
        cosine = check(stage / target.name) if check else None
        if cosine is not None and cosine < bound:
            return cosine
        try:
            os.replace(stage, built)
        except OSError:
            if not target.is_file():  # else another process renamed the same build into place first
                raise
        return cosine
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def graph_precision(precision: str) -> str:
    """The ONNX graph a precision runs: bf16 is the fp32 graph, computed in bfloat16 by OpenVINO (openvino_encoder)."""
    return "fp32" if precision == "bf16" else precision


def _form(precision: str, int8_kind: str) -> str:
    return precision if precision in ("fp32", "bf16") else f"{precision}-{int8_kind}"


def cached_path(mmproj: Path, precision: str, folder: Path | None = None, int8_kind: str = INT8_KIND) -> Path:
    """Where the ONNX file of this mmproj and precision is cached (whether or not it is built yet)."""
    folder = folder or onnx_folder()
    form = _form(precision, int8_kind)
    return folder / f"{content_digest(mmproj, folder / 'file-digests')}-{form}-v{FORMAT_VERSION}" / "model.onnx"


MARKER_SUFFIX = ".fp32.json"  # fallback_marker's files: the int8 self-check's verdicts, not builds


def _cache_entries() -> list[Path]:
    folder = onnx_folder()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "file-digests")


def built_forms() -> list[Path]:
    """Every ONNX build in the cache (this format's folders, and older formats' single files)."""
    return [p for p in _cache_entries() if not p.name.endswith(MARKER_SUFFIX)]


def built_bytes() -> int:
    return sum(size_on_disk(path) for path in built_forms())


def clear_built() -> tuple[int, int]:
    """Remove every ONNX build: (how many, bytes freed); one that cannot be removed is left. The next image on
    the CPU builds its encoder again (and checks an int8 one again: the self-check's markers go too)."""
    removed, freed = remove_all(built_forms())
    remove_all([p for p in _cache_entries() if p.name.endswith(MARKER_SUFFIX)])
    return removed, freed


def build_or_reuse(
    mmproj: Path, precision: str, folder: Path | None = None, int8_kind: str = INT8_KIND
) -> Path | bytes:
    """The cached ONNX file for this mmproj and precision, built when missing; ModelFileError when it cannot be."""
    return build(mmproj, precision, folder, int8_kind).source


@dataclass(frozen=True)
class Built:
    """An ONNX build: its file (or bytes), the precision it computes in, and the int8 self-check's cosine."""

    source: Path | bytes
    precision: str  # what was asked, or "fp32" where the int8 graph failed its self-check
    probe_cosine: float | None = None


def fallback_marker(target: Path) -> Path:
    """Beside an int8 build's folder: the file that says its int8 graph failed the self-check (fp32 runs instead)."""
    return target.parent.with_name(target.parent.name + MARKER_SUFFIX)


def runs_as(mmproj: Path, precision: str, folder: Path | None = None, int8_kind: str = INT8_KIND) -> str:
    """The precision this mmproj's images are encoded in: `precision`, or fp32 after a failed int8 self-check."""
    if precision != "int8" or int8_kind != INT8_KIND:
        return precision
    return "fp32" if fallback_marker(cached_path(mmproj, precision, folder, int8_kind)).is_file() else precision


def build(
    mmproj: Path, precision: str, folder: Path | None = None, int8_kind: str = INT8_KIND, threads: int = 2
) -> Built:
    """build_or_reuse's build, and what it computes in.

    Where the cache cannot be written (a read-only or full disk), the model is built in memory and its
    bytes returned instead: the answer does not need the cache, only the next run's speed does.
    The default int8 form checks itself against fp32 on a probe image when it is built (onnx_probe); under
    PROBE_BOUND the fp32 graph is built instead, said once on stderr, and a marker keeps the choice.
    """
    from smolcli.runtime.vision.onnx_graph import read_vision_weights
    from smolcli.runtime.vision.onnx_probe import PROBE_BOUND, probe_cosine

    precision = graph_precision(precision)  # bf16 has no graph of its own
    target = cached_path(mmproj, precision, folder, int8_kind)
    self_check = precision == "int8" and int8_kind == INT8_KIND  # other kinds: benchmarks measure them as they are
    marker = fallback_marker(target)
    if self_check and marker.is_file():
        cosine = _marked_cosine(marker)
        return Built(build(mmproj, "fp32", folder, threads=threads).source, "fp32", cosine)
    if target.is_file():
        return Built(target, precision)
    weights = read_vision_weights(mmproj)
    # a first run's build takes from seconds (256M) to minutes (2.2B, GPTQ's rounding): said if it is not quick
    building = (
        f"smolcli: building the {precision} ONNX vision encoder of {mmproj.name} (once per mmproj; later runs load it)"
    )
    with note_if_slow(building, BUILD_NOTE_AFTER_S):
        try:
            if self_check:
                cosine = _build_checked(weights, int8_kind, target, threads)
            else:
                cosine = _build_staged(weights, precision, int8_kind, target)
            # what the build and its check freed, handed back before the session loads (else it stays resident
            # under it: 75 MB on 256M)
            return_freed_memory()
        except OSError:  # no cache to write: whole, in memory
            model = _build(weights, precision, int8_kind)
            cosine = probe_cosine(weights, model, threads) if self_check else None
            if cosine is None or cosine >= PROBE_BOUND:
                return Built(model.SerializeToString(), precision, cosine)
    if cosine is not None and cosine < PROBE_BOUND:
        print(
            f"smolcli: the int8 vision encoder of {mmproj.name} is off its fp32 form on a probe image (tile cosine "
            f"{cosine:.5f} < {PROBE_BOUND}); its images are encoded in fp32 instead (slower, exact)",
            file=sys.stderr,
        )
        _write_marker(marker, cosine)
        return Built(build(mmproj, "fp32", folder, threads=threads).source, "fp32", cosine)
    return Built(target, precision, cosine)


def _build_checked(weights, int8_kind: str, target: Path, threads: int) -> float:
    """The default int8 build: one fp32 run of the probe tiles a layer at a time gives both the GPTQ rounding of its
    weights (onnx_gptq) and the self-check's reference embeddings; the check's cosine (the build kept above the
    bound)."""
    from smolcli.runtime.vision.onnx_gptq import calibrated
    from smolcli.runtime.vision.onnx_int8 import gptq_targets
    from smolcli.runtime.vision.onnx_probe import PROBE_BOUND, probe_cosine_of_file

    with calibrated(weights, gptq_targets(weights), threads) as (calibration, reference):
        return_freed_memory()  # the fp32 run's pieces, before the int8 graph is built

        def check(staged: Path) -> float:
            return probe_cosine_of_file(weights, staged, threads, expected=reference)

        return _build_staged(weights, "int8", int8_kind, target, check, PROBE_BOUND, calibration.rounded)


def _marked_cosine(marker: Path) -> float | None:
    try:
        return float(json.loads(marker.read_text())["probe_cosine"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_marker(marker: Path, cosine: float) -> None:
    """The self-check's verdict, written whole (a hidden name renamed); a cache that cannot be written: none."""
    from smolcli.runtime.vision.onnx_probe import PROBE_BOUND

    staged = marker.with_name(f".{marker.name}.{os.getpid()}")
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(json.dumps({"runs": "fp32", "probe_cosine": cosine, "bound": PROBE_BOUND}))
        os.replace(staged, marker)
    except OSError:
        staged.unlink(missing_ok=True)


def _ort_session(path: Path | bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # the memory pattern ORT plans after a run keeps a block as large as the whole run's buffers
    # beside the arena (one tile: +70 MB on 256M); planning each run afresh costs nothing measurable
    options.enable_mem_pattern = False
    source = path if isinstance(path, bytes) else str(path)  # bytes: built in memory, the cache unwritable
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


KEPT_IMAGES = 8  # images (and their tiles' embeddings) held for the prompts being evaluated


def keep_recent(kept: OrderedDict, key: str, value) -> None:
    """Hold value under key, the last KEPT_IMAGES keys used (an encoder's images and their tiles)."""
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > KEPT_IMAGES:
        kept.popitem(last=False)


@dataclass(frozen=True)
class EncodedAhead:
    """What OnnxVisionEncoder.encode_ahead took: seconds loading the session, and encoding."""

    session_seconds: float
    encode_seconds: float


@dataclass
class OnnxVisionEncoder:
    """Given the engine's current mmproj, an image digest and a tile index: that tile's embeddings.

    fallback_to_mtmd: an mmproj that cannot be converted gives one stderr line and None (the engine
    then uses mtmd); without it, a ModelFileError.
    """

    threads: int
    precision: str = DEFAULT_PRECISION
    fallback_to_mtmd: bool = False
    folder: Path | None = None
    int8_kind: str = INT8_KIND  # benchmarks compare the int8 forms
    # the prompt being laid out's images, however many, and the last KEPT_IMAGES before it
    images: PromptImages = field(default_factory=lambda: PromptImages(KEPT_IMAGES))
    _session: object = None
    _session_mmproj: Path | None = None
    _refused: set = field(default_factory=set)  # mmproj paths that could not be converted
    _tiles: OrderedDict = field(default_factory=OrderedDict)  # digest -> [tiles, tokens, n_embd], the last few
    build_seconds: float = 0.0
    runs: str = ""  # the precision the last mmproj's images are encoded in (runs_as): precision, or fp32

    @property
    def name(self) -> str:
        if self.precision == "bf16":  # the ONNX graph, run by OpenVINO rather than ONNX Runtime
            return "openvino-bf16"
        return f"onnx-{self.runs or self.precision}"

    def _note_mmproj(self, mmproj: GGUFSummary) -> None:
        self.runs = self.runs_for(mmproj)

    @property
    def cache_tag(self) -> str:
        """What the embedding cache keys carry: the ONNX file's form and graph version, not only the precision."""
        runtime = "openvino" if self.precision == "bf16" else "onnx"
        return f"{runtime}-{_form(self.precision, self.int8_kind)}-v{FORMAT_VERSION}"

    def forget(self) -> None:
        """Drop the images and embeddings held (benchmarks: encode again)."""
        self.images.clear()
        self._tiles.clear()

    def release(self) -> None:
        """Drop the session too, and its memory (benchmarks hold several encoders at once)."""
        self.forget()
        self._session, self._session_mmproj = None, None

    def remember(self, digest: str, image: RGBImage) -> None:
        self.images.remember(digest, image)

    def drop_session(self) -> None:
        """Free the session (weights and arena), keeping the tiles held: the next image not held loads it again."""
        self._session = None
        return_freed_memory()

    def encode_ahead(
        self, mmproj: GGUFSummary, images: list[RGBImage], cache: EmbeddingCache | None = None
    ) -> EncodedAhead | None:
        """Encode every tile of these images now, before the language model loads, then free the session.

        A first question's peak is then the larger of the encoder's and the language model's instead of
        their sum (256M, a 13-tile photo: the session holds about 150 MB of weights and 45 MB of arena).
        The tiles stay held for the engine (the last KEPT_IMAGES images). None when nothing needed it: every
        tile in the embedding cache, more images than are held, or an mmproj that falls back to mtmd.
        """
        fitted = [fit_for_tiling(mmproj, image) for image in images]
        digests = [image_digest(image.width, image.height, image.pixels) for image in fitted]
        missing = [
            (d, image) for d, image in zip(digests, fitted, strict=True) if not self._cached(mmproj, d, image, cache)
        ]
        if not missing or len(set(digests)) > KEPT_IMAGES:
            return None
        started = time.perf_counter()
        session = self._prepare(mmproj)
        if session is None:
            return None
        encoding = time.perf_counter()
        for digest, image in missing:
            self.remember(digest, image)
            if digest not in self._tiles:
                keep_recent(self._tiles, digest, self._encode(session, mmproj, image))
        encoded = time.perf_counter() - encoding
        del session  # the last reference but the encoder's own: drop_session frees it
        self.drop_session()
        return EncodedAhead(encoding - started, encoded)

    def _cached(self, mmproj: GGUFSummary, digest: str, image: RGBImage, cache: EmbeddingCache | None) -> bool:
        """Whether the embedding cache holds every tile of this image, under the keys the engine will ask for."""
        if cache is None:
            return False
        dims = VisionDims.from_gguf(mmproj.metadata)
        encoder = cache.encoder_digest(mmproj.path, self.cache_tag)
        grid = self.tile_grid(mmproj, image)
        slots = [p for p in image_prompt(grid.rows, grid.columns) if isinstance(p, TileSlot)]
        return all(
            cache.get(EmbeddingKey(digest, encoder, slot.tile, dims.tokens_per_tile, dims.projection_dim)) is not None
            for slot in slots
        )

    def session_for(self, mmproj: GGUFSummary):
        """The ONNX Runtime session of this mmproj's encoder, built or loaded once and kept (the video bench times it)."""
        if self._session is not None and self._session_mmproj == mmproj.path:
            return self._session
        started = time.perf_counter()
        built = build(mmproj.path, self.precision, self.folder, self.int8_kind, self.threads)  # bf16: the fp32 graph
        path = built.source
        self.runs = self.precision if self.precision == "bf16" else built.precision
        if self.precision == "bf16":
            from smolcli.runtime.vision.openvino_encoder import openvino_session

            self._session = openvino_session(path, self.threads)
        else:
            self._session = _ort_session(path, self.threads)
        if self._session_mmproj != mmproj.path:
            self._tiles.clear()
        self._session_mmproj = mmproj.path
        self.build_seconds += time.perf_counter() - started
        return self._session

    def runs_for(self, mmproj: GGUFSummary) -> str:
        """What this mmproj's images will be encoded in (int8, fp32 after a failed self-check, or bf16), as the
        memory plan counts it; reads the cache's marker only, builds nothing."""
        return runs_as(mmproj.path, self.precision, self.folder, self.int8_kind)

    def is_built(self, mmproj: GGUFSummary) -> bool:
        """Whether this mmproj's ONNX file is cached already (else the first image builds it): the fp32 one where
        the int8 graph failed its self-check (and for bf16, whose graph is the fp32 one)."""
        runs = graph_precision(self.runs_for(mmproj))
        return cached_path(mmproj.path, runs, self.folder, self.int8_kind).is_file()

    def engine_for(self, mmproj: GGUFSummary) -> str:
        """The name of the engine that encodes this mmproj's tiles: ours, or "mtmd" after a fallback."""
        if mmproj.path in self._refused:
            return "mtmd"
        self._note_mmproj(mmproj)
        # a session made for it (and maybe dropped since), or its build cached: the session waits for a tile
        # that needs encoding (every tile in the embedding cache: none at all)
        if mmproj.path == self._session_mmproj or self.is_built(mmproj):
            return self.name
        return self.name if self._prepare(mmproj) is not None else "mtmd"

    def _prepare(self, mmproj: GGUFSummary):
        """The session for this mmproj, or None when it falls back to mtmd (said once on stderr)."""
        if mmproj.path in self._refused:
            return None
        try:
            try:
                return self.session_for(mmproj)
            except ImportError as missing:  # installed but broken: as good as missing
                raise ModelFileError(f"onnxruntime could not be imported ({missing})", path=mmproj.path) from None
        except ModelFileError as error:
            if not self.fallback_to_mtmd:
                raise ModelFileError(
                    f"{error} - it cannot run through ONNX Runtime; use {{vision_engine=mtmd}}", path=mmproj.path
                ) from None
            self._refused.add(mmproj.path)
            print(f"smolcli: {error}; encoding images with mtmd instead", file=sys.stderr)
            return None

    def tile_embeddings(self, mmproj: GGUFSummary, digest: str, tile: int) -> np.ndarray | None:
        """float32 [tokens, n_embd] of this tile, or None when this mmproj falls back to mtmd."""
        self.images.asked()
        self._note_mmproj(mmproj)
        if digest in self._tiles and self._session_mmproj == mmproj.path:
            tiles = self._tiles[digest]
            return np.ascontiguousarray(tiles[tile % len(tiles)])
        session = self._prepare(mmproj)
        if session is None:
            return None
        if digest not in self._tiles:
            image = self.images.get(digest, "the ONNX vision encoder")
            keep_recent(self._tiles, digest, self._encode(session, mmproj, image))
        tiles = self._tiles[digest]
        # the engine counts tiles per image over the whole prompt: the same image twice continues the count
        return np.ascontiguousarray(tiles[tile % len(tiles)])

    def frame_embeddings(self, mmproj: GGUFSummary, frame: RGBImage) -> np.ndarray | None:
        """float32 [tokens, n_embd] of a video frame already cut to one tile's square: encoded as it is, untiled."""
        session = self._prepare(mmproj)
        if session is None:
            return None
        meta = mmproj.metadata
        piece = Image.frombytes("RGB", (frame.width, frame.height), frame.pixels)
        pixels = tile_pixels(piece, list(meta["clip.vision.image_mean"]), list(meta["clip.vision.image_std"]))
        return session.run(None, {"pixel_values": pixels[None]})[0][0]

    def tile_grid(self, mmproj: GGUFSummary, image: RGBImage) -> TileGrid:
        """The grid _encode cuts this image into."""
        return tile_grid(image.width, image.height, int(mmproj.metadata[PREPROC_KEY]), int(mmproj.metadata[TILE_KEY]))

    def _encode(self, session, mmproj: GGUFSummary, image: RGBImage) -> np.ndarray:
        """[tiles, tokens, n_embd]: each tile's pixels made just before its run (a 13-tile photo's would be 41 MB)."""
        meta = mmproj.metadata
        mean, std = list(meta["clip.vision.image_mean"]), list(meta["clip.vision.image_std"])
        tiles = tile_images(image, int(meta[PREPROC_KEY]), int(meta[TILE_KEY]))
        runs = [session.run(None, {"pixel_values": tile_pixels(piece, mean, std)[None]})[0] for piece in tiles]
        return np.concatenate(runs)
