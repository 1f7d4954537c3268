"""How much memory a run takes at its peak, by part, worked out before anything is loaded.

Parts, in bytes, each split into what stays in CPU memory and what goes to a GPU:

  text_weights      the language-model GGUF (llama.cpp maps the file; a run reads nearly all of it)
  repacked_weights  --repack-weights: llama.cpp's CPU_REPACK copy, counted as every 2-D weight of a type it
                    can reorder (Q4_0, Q4_K, IQ4_NL, Q8_0) but token_embd: an upper bound, since which types
                    get a copy depends on the CPU's kernels
  vision_weights    the mmproj file (mtmd reads it into its own buffer)
  kv_cache          n_ctx (llama.cpp pads it to 256) x layers x 2 (K and V) x kv heads x head size x bytes per
                    element (f16 2, q8_0 34/32, q4_0 18/32)
  text_compute      llama.cpp's compute buffer for one n_ubatch batch, and its logits output buffer
  vision_compute    the encoder's compute buffer
  images            the prompt's images: three RGB copies each (ours, the ctypes copy, mtmd's bitmap),
                    mtmd's resized u8 images, every tile as f32, one tile's embeddings; and a video's
                    frames: each kept as one tile-size RGB picture and, tokenized all at once before the
                    first is evaluated, mtmd's two f32 tiles of it (the 1x1 grid and the global view)
  runtime           Python, the libraries and llama.cpp's vocabulary; plus a GPU runtime when offloading
  prefix_state      an ask whose image prompt the prefix cache may store or restore (llama/prefix_cache.py: the ONNX
                    encoder's layout, the CPU, no LoRA): the prefix's KV state copied out of llama.cpp (stored) or
                    read from its file (restored), held beside the context's own cache; counted as a state of the
                    whole context's cells, since the prefix is shorter than the prompt (256M, the 13-tile photo:
                    about 20 MB)
  shared_contexts   serve --parallel N's BatchDecoder (runtime/decoding/batch_decoder.py): its context of N
                    sequences over its own cells (KV cache, a compute buffer for N tokens and N logits rows),
                    one conversation's state on its way in or out of it (join and leave copy it through a buffer),
                    and the N - 1 other conversations answered beside the run's, each with a context of its own
                    (the Chat it runs in: {ctx}, or 4096 cells, while its share of the pool is {ctx} or 2048)
  kept_conversations  serve --conversations K: the Chats kept between requests, each parked as its sequence's saved
                    state (Chat.park(): llama_state_seq_get_data's bytes, sequence_state_bytes of the tokens it
                    holds, its context freed); planned as the parked states' bytes now, or at serve's start as the
                    byte budget they are held to (K conversations at a Chat's full size, or what the limit leaves)

On a unified-memory board (Jetson) CPU and GPU parts share one memory: `total` is what to compare.

Calibration (llama-cpp-python 0.3.36 on x86-64, 2 threads, flash attention "auto", which is on for CPU),
llama.cpp's own log lines against the formulas below:
  2.2B (hidden 2048, 24 layers, 32/32 heads, ff 8192, vocab 49155), Q4_K_M file 1,111,542,464 B:
    model buffer 1050.02 MiB (the file: 1060.0 MiB); n_ctx 1280, n_ubatch 512: KV 240.00 MiB, compute
    104.01 MiB (formula 104.03), output 0.19 MiB; Q8_0 mmproj 592,520,032 B: "model size" 565.05 MiB,
    clip compute 21.58 MiB (729 patches, hidden 1152, ff 4304; formula 21.64).
  256M (hidden 576, 30 layers, 9/3 heads, ff 1536, vocab 49280), Q4_K_M 124,351,424 B, Q8_0 mmproj
    103,768,544 B: n_ctx 1024: KV 22.50 MiB, compute 98.50 MiB (formula 98.52); n_ctx 4096 with q4_0:
    KV 25.31, compute 99.63 (formula 99.68); clip compute 21.00 MiB (formula 21.06).
  tiny test shape (hidden 256, 2 layers, ff 512, vocab 384): compute 2.1318 MiB at n_ctx 256 (formula
    2.1328), 8.0137 at 4096 (8.0156), 8.5449 with q8_0 or q4_0 (8.5469); KV 0.25 / 4.00 / 2.12 / 1.12 MiB.
Peak RSS against the plan's total (all on the CPU; the plan counts only the logits rows written,
as the figures below show the reserved rest is never touched):
  2.2B `ask` with a 1024x768 photo (13 chunks, n_ctx 1280), repack off (the default): 2019 MiB measured,
    2093 planned (2139 when the whole reserved compute buffer, 104.0078 MiB, formula 104.03, was counted);
    repack on: 2.67 GiB measured, 2.80 GiB planned with the whole buffer
  2.2B LM alone, n_ctx 1280, 512-token prefill: 1422 MiB measured, 1508 planned with the whole buffer;
    with repack (a 729 MiB copy, the formula's figure too): 2143 measured, 2237 planned
  256M `ask` with the same photo (13 chunks, n_ctx 1024): 405 MiB measured, 451 planned (537 with the
    whole buffer: llama.cpp reserves n_ubatch x vocab logits, ask and chat write one row per batch)
  tiny `ask`, text only: 70.4 MiB measured, 85.2 planned; with three 1024x768 images: 96.2, 106.4.
  256M `ask --video` of a 640x360 clip at --fps 2 (n_ctx 512 / 1536): 2 frames 387 MiB measured, 399
    planned; 16 frames 505 measured, 517 planned (the frames' part grew by 118 MiB in both).
The runtime baseline is what is left: 52 MiB after the imports alone, 65-70 MiB in a tiny run.

With the ONNX Runtime vision engine (RunSettings.vision_engine "onnx": no mtmd context, runtime/vision/onnx_vision.py)
the vision parts are the ONNX session's instead (calibrated on 256M's shapes, ORT 1.32, 2 threads):
  vision_weights  the int8 weights x ONNX_INT8_RESIDENT (MLAS packs each int8 matrix while ORT's mapped
                  copy is resident: 154 MB at the session's load peak for 256M) plus the float32 rest
                  (attn_out, the connector, patch convolution, positions, biases, norms, scales)
  vision_compute  ORT's arena for one tile's run (the encoder runs a tile at a time): about three
                  [patches, ff] float buffers and four [patches, width] ones; 256M: 50 MB by the formula,
                  44 MB measured (graph format 6; format 5's head-pair scores took 90-95 MB)
  vision_build    only when the ONNX file is not cached yet: the first run builds it, each initializer written
                  to the weights file as it is made (each mmproj tensor read into a buffer of its own), then
                  checks the int8 graph against the fp32 one on probe tiles (onnx_probe: the fp32 reference run
                  a layer at a time, one layer's float32 weights held, then the int8 graph's session without
                  MLAS's packed copies). Each step holds less than the session that follows it, so what the
                  first run adds at its peak is what the build leaves resident (ONNX_BUILD_FIXED: onnx's
                  protobuf messages, without the onnx package's import, onnx_proto, and what the check's
                  sessions leave in onnxruntime's pages and the heap; ONNX_BUILD_PER_PARAM bytes per vision
                  parameter), resident beside the session's phase and the language model's alike (in neither
                  group). Measured first run against a later one (Q4_K_M + Q8_0 mmproj, the 13-tile photo,
                  medians of 3): 256M 0.332 GB against 0.322 (93.6M vision parameters), 2.2B 1.628 GB
                  against 1.618 (434M, one run each)
  images          our RGB copy and Pillow's, the resized and whole-tile u8 images and the tiles, the
                  float32 pixel values of one image, its embeddings
  runtime         plus onnxruntime's libraries and session (ORT_RUNTIME; the onnx package is never imported)
A first question on a model not loaded yet (RunSettings.vision_first) encodes its images before the
language model loads and frees the session after: VISION_PHASE's parts and TEXT_PHASE's are then never
resident together, and the plan's peak counts the larger group beside the shared parts (MemoryPlan.apart).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import gguf

from smolcli.convert.quant_layout import Layout, mix_of, text_layout
from smolcli.errors import SmolcliError
from smolcli.models.dims import TextDims, VisionDims
from smolcli.models.family import tensor_name
from smolcli.runtime.gguf.gguf_file import GGUFSummary
from smolcli.runtime.llama.quant_types import KV_CACHE_TYPES, kv_block
from smolcli.runtime.vision.image_tiles import tile_grid

MiB = 1024 * 1024
KV_GRANULE = 256  # llama.cpp pads n_ctx to this
MAX_UBATCH = 512  # the engine's n_ubatch: min(512, n_ctx)
MAX_BATCH = 2048  # its n_batch: min(EngineOptions.n_batch, n_ctx)
FLOAT = 4
QType = gguf.GGMLQuantizationType
REPACKED_TYPES = (QType.Q4_0, QType.Q4_K, QType.IQ4_NL, QType.Q8_0)
TOKEN_EMBD = tensor_name(gguf.MODEL_TENSOR.TOKEN_EMBD)
OUTPUT = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.OUTPUT]  # output.weight and output_norm.weight

RUNTIME_BASELINE = 80 * MiB
RUNTIME_PER_VOCAB_ENTRY = 512  # llama.cpp's token and merge tables: ~24 MiB for SmolLM2's 49k
# An allowance for a CUDA context and its libraries when layers go to a GPU. Not measured: no GPU
# build of llama-cpp-python was at hand; replace it with a measurement when one is.
GPU_RUNTIME = 384 * MiB
RGB_COPIES = 3
MTMD_U8_COPIES = 3  # the resized image, the one cut to whole tiles, and the tiles
# PyAV's FFmpeg libraries and the decoder's frame pool, with a margin: a 256M `ask --video` of a 640x360
# clip peaked 4 MiB above the plan without it (2 and 16 frames alike; the frames' own part was exact)
VIDEO_DECODING = 16 * MiB


@dataclass(frozen=True)
class TextFootprint:
    """The language model's weights, and where they sit when some blocks go to a GPU."""

    dims: TextDims
    total: int
    block_bytes: float  # one transformer block's weights, on average
    output_bytes: int  # output.weight and output_norm: on the GPU only when every block is
    repackable_block: float
    repackable_output: int

    @classmethod
    def from_layout(cls, dims: TextDims, layout: Layout, total: int | None = None) -> "TextFootprint":
        blocks = [t for t in layout.tensors if t.block is not None]
        output = [t for t in layout.tensors if t.name.startswith(OUTPUT)]
        repackable = [t for t in layout.tensors if t.qtype in REPACKED_TYPES and t.name != TOKEN_EMBD]
        n_layer = max(1, dims.n_layer)
        return cls(
            dims,
            layout.file_bytes if total is None else total,
            sum(t.nbytes for t in blocks) / n_layer,
            sum(t.nbytes for t in output),
            sum(t.nbytes for t in repackable if t.block is not None) / n_layer,
            sum(t.nbytes for t in repackable if t.block is None),
        )

    @classmethod
    def from_shape(cls, text_config: dict, mix: str) -> "TextFootprint":
        """A model not downloaded yet: its file as a conversion with this mix would write it."""
        dims = TextDims.from_config(text_config)
        return cls.from_layout(dims, text_layout(dims, mix))

    @classmethod
    def from_file(cls, summary: GGUFSummary) -> "TextFootprint":
        dims = TextDims.from_gguf(summary.metadata, summary.array_lengths.get(gguf.Keys.Tokenizer.LIST))
        mix = mix_of(summary.metadata)
        try:
            layout = text_layout(dims, mix) if mix else None
        except SmolcliError:  # a mix the estimate does not cover: the cautious split below
            layout = None
        if layout is not None and layout.type_counts() == Counter(summary.tensor_types):
            return cls.from_layout(dims, layout, summary.size)
        # a file this estimate cannot rebuild (another converter, an uncovered mix): every byte counts as
        # repackable and as block weights, the cautious side of both
        per_block = summary.size / max(1, dims.n_layer)
        return cls(dims, summary.size, per_block, 0, per_block, 0)


@dataclass(frozen=True)
class VisionFootprint:
    dims: VisionDims
    total: int

    @classmethod
    def from_file(cls, summary: GGUFSummary) -> "VisionFootprint":
        return cls(VisionDims.from_gguf(summary.metadata), summary.size)


@dataclass(frozen=True)
class SharedContext:
    """A BatchDecoder's context (serve --parallel): n_seq sequences over n_ctx cells, one token each per decode."""

    n_seq: int
    n_ctx: int
    cache_type: str = "f16"
    conversation_ctx: int = 0  # the largest conversation context whose cache is copied in (0: n_ctx)
    chat_ctx: int = 0  # each other conversation's own context, where its prompt runs (0: conversation_ctx)


@dataclass(frozen=True)
class RunSettings:
    n_ctx: int
    cache_type: str = "f16"
    images: tuple[tuple[int, int], ...] = ()  # (width, height) of each image in the prompt
    n_gpu_layers: int = 0  # as llama.cpp takes it (-1: all); 0 when the build cannot offload
    mmproj_offload: bool = True
    repack_weights: bool = False
    frames: int = 0  # a video's frames in the prompt, each one tile-size global view (runtime/video/video_prompt.py)
    vision_engine: str = "mtmd"  # or "onnx": ONNX Runtime encodes the tiles and no mtmd context is made
    onnx_built: bool = True  # False: this run builds the ONNX file first (vision_build)
    # with "onnx": the images are encoded before the language model loads and the session is freed after
    # (a first question: OnnxVisionEncoder.encode_ahead), so the two phases' parts are never resident together
    vision_first: bool = False
    # the prefix cache may store or restore this prompt's prefix state (applies with the ONNX encoder's layout only)
    prefix_state: bool = False
    shared_contexts: tuple[SharedContext, ...] = ()  # BatchDecoders alive beside the run (serve --parallel)
    # with "onnx": what the encoder computes in (OnnxVisionEncoder.runs_for): int8, fp32, or bf16 (OpenVINO)
    vision_precision: str = "int8"
    # the saved states of conversations parked beside the run (serve --conversations, Chat.park()), in bytes
    kept_states: int = 0


# What encode_ahead keeps apart: the ONNX session's phase, then the language model's. vision_build is in neither:
# what a first run's build leaves (onnx's protobuf messages, the heap) stays resident beside both
VISION_PHASE = ("vision_weights", "vision_compute")
TEXT_PHASE = (
    "text_weights",
    "repacked_weights",
    "kv_cache",
    "text_compute",
    "prefix_state",
    "shared_contexts",
    "kept_conversations",
)


@dataclass(frozen=True)
class Part:
    name: str
    cpu: int
    gpu: int = 0

    @property
    def total(self) -> int:
        return self.cpu + self.gpu


@dataclass(frozen=True)
class MemoryPlan:
    parts: tuple[Part, ...]
    n_ctx: int
    cache_type: str
    vision_engine: str = "mtmd"
    # groups of parts never resident at once (VISION_PHASE, TEXT_PHASE): the peak counts the larger group
    # beside every part in none; () adds every part up
    apart: tuple[tuple[str, ...], ...] = ()

    def _peak(self, side) -> int:
        grouped = {name for group in self.apart for name in group}
        shared = sum(side(p) for p in self.parts if p.name not in grouped)
        groups = (sum(side(p) for p in self.parts if p.name in group) for group in self.apart)
        return shared + max(groups, default=0)

    @property
    def cpu(self) -> int:
        return self._peak(lambda p: p.cpu)

    @property
    def gpu(self) -> int:
        return self._peak(lambda p: p.gpu)

    @property
    def total(self) -> int:
        return self.cpu + self.gpu

    def part(self, name: str) -> Part:
        return next(p for p in self.parts if p.name == name)

    def as_dict(self) -> dict:
        return {
            "n_ctx": self.n_ctx,
            "cache_type": self.cache_type,
            "vision_engine": self.vision_engine,
            "parts": {p.name: {"cpu": p.cpu, "gpu": p.gpu} for p in self.parts},
            "apart": [list(group) for group in self.apart],
            "cpu": self.cpu,
            "gpu": self.gpu,
            "total": self.total,
        }


def kv_cells(n_ctx: int) -> int:
    return -(-n_ctx // KV_GRANULE) * KV_GRANULE


def kv_cache_bytes(dims: TextDims, n_ctx: int, cache_type: str, n_layers: int | None = None) -> int:
    """What llama.cpp allocates for K and V: exact for a dense llama model."""
    per_block, block_bytes = kv_block(cache_type)
    row = dims.n_embd_kv // per_block * block_bytes
    return kv_cells(n_ctx) * (dims.n_layer if n_layers is None else n_layers) * 2 * row


# llama.cpp's saved state of a sequence (llama_state_seq_get_size) beyond the K and V rows of its cells: per cell its
# position and sequence ids, per layer the rows' type and size, and a few counts (256M: 12 bytes a cell, 24 a layer,
# 24 more; tests/test_memory_plan.py holds the formula against llama.cpp's own size)
STATE_PER_CELL = 12
STATE_PER_LAYER = 24
STATE_FIXED = 64


def sequence_state_bytes(dims: TextDims, n_cells: int, cache_type: str) -> int:
    """What LlamaContext.sequence_state() copies out for a sequence of n_cells cells (and a prefix cache file holds)."""
    per_block, block_bytes = kv_block(cache_type)
    row = dims.n_embd_kv // per_block * block_bytes
    return n_cells * (dims.n_layer * 2 * row + STATE_PER_CELL) + dims.n_layer * STATE_PER_LAYER + STATE_FIXED


def cache_type_fits_model(dims: TextDims, cache_type: str) -> bool:
    """A quantized cache stores each head in whole blocks."""
    return dims.head_dim % kv_block(cache_type)[0] == 0


def text_compute_bytes(
    dims: TextDims, n_ctx: int, cache_type: str, n_outputs: int | None = None, n_ubatch: int = MAX_UBATCH
) -> int:
    """llama.cpp's compute buffer with flash attention, and its logits output buffer.

    The buffer holds the largest set of tensors alive at once in a batch's graph: at the end the
    logits of every batch position (llama.cpp reserves for that), inside a layer the attention
    mask and the feed-forward activations. A quantized cache adds one f32 copy of a batch's queries.
    n_outputs: the logits rows a batch really writes (None: the reserved worst case, a whole batch).
    n_ubatch: the context's batch size (a BatchDecoder's is its sequence count).
    """
    n_ubatch = min(n_ubatch, n_ctx)
    cells = kv_cells(n_ctx)
    rows = n_ubatch if n_outputs is None else min(n_outputs, n_ubatch)
    logits = FLOAT * rows * (dims.n_vocab + 2 * dims.n_embd + 2)
    layer = 2 * cells * n_ubatch + FLOAT * n_ubatch * (3 * dims.n_ff + 2 * dims.n_embd)
    small_tensors = 8 * FLOAT * n_ubatch  # positions, output ids, alignment
    quantized_cache = 0 if cache_type == "f16" else FLOAT * n_ubatch * (dims.n_embd + 16)
    return max(logits, layer) + small_tensors + quantized_cache + FLOAT * dims.n_vocab


def vision_compute_bytes(dims: VisionDims) -> int:
    """mtmd's compute buffer for one tile, with flash attention (the encoder's feed-forward and attention inputs)."""
    return FLOAT * dims.patches_per_tile * (dims.n_ff + 3 * dims.n_embd) + 64 * 1024


def tiles_per_image(dims: VisionDims, width: int, height: int) -> int:
    """Tiles plus the global view."""
    return tile_grid(width, height, dims.longest_edge, dims.image_size).encodes


def image_tokens(dims: VisionDims, images: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> int:
    return sum(tiles_per_image(dims, w, h) for w, h in images) * dims.tokens_per_tile


def images_bytes(dims: VisionDims, images: tuple[tuple[int, int], ...]) -> int:
    if not images:
        return 0
    tile_floats = dims.image_size**2 * 3
    rgb = sum(RGB_COPIES * w * h * 3 for w, h in images)
    tiles = sum(tiles_per_image(dims, w, h) for w, h in images) * tile_floats * FLOAT
    # mtmd resizes one image at a time; its u8 copies are as large as the tile grid
    resized = max(MTMD_U8_COPIES * (tiles_per_image(dims, w, h) - 1) * tile_floats for w, h in images)
    embeddings = dims.tokens_per_tile * dims.projection_dim * FLOAT
    return rgb + tiles + resized + embeddings


def frames_bytes(dims: VisionDims, n_frames: int) -> int:
    """A clip's frames while its prompt is tokenized: per frame our tile-size RGB copy and mtmd's two f32 tiles
    (its 1x1 grid and its global view, the same pixels; the ONNX engine holds only the copy, so it plans above); one frame at a time: its ctypes and bitmap copies and
    mtmd's u8 resizes; and the decoder (VIDEO_DECODING)."""
    if n_frames <= 0:
        return 0
    rgb = dims.image_size**2 * 3
    tile_floats = dims.image_size**2 * 3
    per_frame = rgb + 2 * tile_floats * FLOAT
    one_at_a_time = (RGB_COPIES - 1) * rgb + MTMD_U8_COPIES * rgb
    return n_frames * per_frame + one_at_a_time + VIDEO_DECODING


# resident bytes per int8 weight byte at the session's load peak (MLAS's packed copy, the mapped original while it
# is packed): 256M's 78 MB of int8 and 57 MB of fp32 weights peaked at 154 MB (graph format 6, 1.6 for format 5)
ONNX_INT8_RESIDENT = 1.3
# --vision-precision fp32 and bf16 hold every vision weight in float32 (and bf16 a bfloat16 copy OpenVINO compiles
# beside it). `smolcli ask --vision-precision X` on 256M's bench files and the 13-tile photo, the file built: fp32
# 0.58 GB and bf16 0.93 GB peak, against int8's 0.32 (shared 2-core AMD EPYC, one run each, twice). Resident bytes
# per float32 weight byte, with room over what those peaks imply (about 1.0 and 1.9)
ONNX_FP32_RESIDENT = 1.15
OPENVINO_BF16_RESIDENT = 2.1
OPENVINO_RUNTIME = 40 * MiB  # openvino's libraries and its CPU plugin: +37 MB over onnxruntime's import
# a first run's peak over a later one's, per vision parameter, beyond ONNX_BUILD_FIXED: 256M 9-10 MB in all (within
# the fixed part), 2.2B 10 MB (0.02 per parameter); 0.5 errs high (the build, self-check included, took 8 per
# parameter when its fp32 reference held the whole float32 tower)
ONNX_BUILD_PER_PARAM = 0.5
ORT_RUNTIME = 32 * MiB  # onnxruntime's libraries (20 MB imported) and its session's own (tiny run: +29 MB over mtmd's)
# onnx's generated protobuf module (2 MB; the onnx package, 14 MB resident, is not imported: onnx_proto) and the
# onnxruntime code pages and heap the build's check sessions leave (256M: a first run 9-10 MB over a later one)
ONNX_BUILD_FIXED = 12 * MiB


def vision_parameters(dims: VisionDims) -> tuple[int, int]:
    """(weights the int8 graph stores as int8, the rest in float32) of the encoder + connector."""
    w, ff = dims.n_embd, dims.n_ff
    # the default int8 form (onnx_int8 "outlier-asym-fp32-o") keeps attn_out and the connector projection in fp32,
    # and stores ffn_down's weight twice in int8 (its rounding error as a second weight, FORMAT_VERSION 9) in the
    # layers with outlier channels: every layer of a trained tower, none of a random one (counted in all: errs high)
    int8 = dims.n_layer * (3 * w * w + 3 * w * ff)
    float_linears = dims.n_layer * w * w + dims.projection_dim * w * dims.scale_factor**2
    # patch convolution, positions; per layer 4 + 2 biases, 2 layernorms, and a scale per output channel
    per_layer = 2 * (4 * w + w + ff) + 4 * w
    fp32 = w * 3 * dims.patch_size**2 + dims.patches_per_tile * w + dims.n_layer * per_layer + 3 * w
    return int8, float_linears + fp32 + dims.projection_dim


def onnx_weights_bytes(dims: VisionDims, precision: str = "int8") -> int:
    int8, fp32 = vision_parameters(dims)
    if precision in ("fp32", "bf16"):
        # every weight once, in float32: the second ffn_down weight is the int8 graph's own
        weights = FLOAT * (int8 - dims.n_layer * dims.n_embd * dims.n_ff + fp32)
        return round((ONNX_FP32_RESIDENT if precision == "fp32" else OPENVINO_BF16_RESIDENT) * weights)
    return round(ONNX_INT8_RESIDENT * int8) + FLOAT * fp32


def onnx_compute_bytes(dims: VisionDims) -> int:
    """ORT's buffers for one tile's run (graph format 6: MultiHeadAttention holds no [patches, patches] scores,
    the int8 rescale is fused): about three [patches, ff] float buffers and a few [patches, width] ones."""
    return FLOAT * dims.patches_per_tile * (3 * dims.n_ff + 4 * dims.n_embd)


def onnx_build_bytes(dims: VisionDims) -> int:
    return ONNX_BUILD_FIXED + round(ONNX_BUILD_PER_PARAM * sum(vision_parameters(dims)))


def onnx_images_bytes(dims: VisionDims, images: tuple[tuple[int, int], ...]) -> int:
    """Our RGB copies of every image; the largest one's Pillow images, one tile's pixels, the embeddings."""
    if not images:
        return 0
    tile_pixels = dims.image_size**2 * 3
    rgb = sum(2 * w * h * 3 for w, h in images)  # ours, and Pillow's frombytes copy
    tiles = max(tiles_per_image(dims, w, h) for w, h in images)
    # the longest-edge resize and the whole-tile one (each about the tile grid), the crops; one tile's
    # pixels at a time: float64 rescaled, float32, normalized (image_preprocess.tile_pixels)
    per_image = 3 * tiles * tile_pixels + 16 * tile_pixels
    embeddings = FLOAT * tiles * dims.tokens_per_tile * dims.projection_dim
    return rgb + per_image + embeddings


def plan_memory(text: TextFootprint, vision: VisionFootprint | None, run: RunSettings) -> MemoryPlan:
    dims = text.dims
    n_gpu = run.n_gpu_layers
    offloaded = dims.n_layer if n_gpu < 0 else min(n_gpu, dims.n_layer)
    output_on_gpu = n_gpu < 0 or n_gpu > dims.n_layer
    on_cpu = dims.n_layer - offloaded

    gpu_weights = round(offloaded * text.block_bytes) + (text.output_bytes if output_on_gpu else 0)
    repacked = 0
    if run.repack_weights:
        repacked = round(on_cpu * text.repackable_block) + (0 if output_on_gpu else text.repackable_output)

    kv_gpu = kv_cache_bytes(dims, run.n_ctx, run.cache_type, offloaded)
    kv_cpu = kv_cache_bytes(dims, run.n_ctx, run.cache_type, on_cpu)

    compute = text_compute_bytes(dims, run.n_ctx, run.cache_type)
    if offloaded:
        # the GPU runs the graph; the CPU keeps a host buffer for the embeddings and inputs, or, with
        # blocks left behind, a whole compute buffer of its own
        host = compute if on_cpu or not output_on_gpu else FLOAT * min(MAX_UBATCH, run.n_ctx) * 2 * dims.n_embd
        text_compute = Part("text_compute", host, compute)
    else:
        # On the CPU the buffer is plain memory that only counts once written; ask and chat ask for
        # the logits of one position per batch, so the rows reserved for the others stay untouched.
        text_compute = Part("text_compute", text_compute_bytes(dims, run.n_ctx, run.cache_type, n_outputs=1))

    vision_on_gpu = vision is not None and run.mmproj_offload and n_gpu != 0
    vision_weights = vision.total if vision else 0
    vision_compute = vision_compute_bytes(vision.dims) if vision else 0
    images = images_bytes(vision.dims, run.images) if vision else 0
    frames = frames_bytes(vision.dims, run.frames) if vision else 0
    runtime = RUNTIME_BASELINE + RUNTIME_PER_VOCAB_ENTRY * dims.n_vocab
    onnx = vision is not None and run.vision_engine == "onnx"
    if onnx:  # the ONNX session on the CPU in place of mtmd's buffers
        vision_on_gpu = False
        vision_weights = onnx_weights_bytes(vision.dims, run.vision_precision)
        vision_compute = onnx_compute_bytes(vision.dims)
        # and the prompt's rows on their way into llama.cpp (embedding_batch.EmbeddingStream): one batch, and
        # llama_batch_init's copy of it
        images = onnx_images_bytes(vision.dims, run.images) + 2 * FLOAT * min(MAX_BATCH, run.n_ctx) * dims.n_embd
        runtime += ORT_RUNTIME + (OPENVINO_RUNTIME if run.vision_precision == "bf16" else 0)
    build = onnx_build_bytes(vision.dims) if onnx and not run.onnx_built else 0
    # the prefix cache works on the ONNX encoder's layout, on the CPU (PrefixReuse.applies)
    prefix = onnx and run.prefix_state and bool(run.images) and not offloaded
    prefix_state = sequence_state_bytes(dims, run.n_ctx, run.cache_type) if prefix else 0
    shared = [shared_context_part(dims, context, offloaded) for context in run.shared_contexts]
    parts = (
        Part("text_weights", text.total - gpu_weights, gpu_weights),
        Part("repacked_weights", repacked),
        Part("vision_weights", 0, vision_weights) if vision_on_gpu else Part("vision_weights", vision_weights),
        Part("kv_cache", kv_cpu, kv_gpu),
        text_compute,
        Part("vision_compute", 0, vision_compute) if vision_on_gpu else Part("vision_compute", vision_compute),
        Part("images", images + frames),
        Part("vision_build", build),
        Part("runtime", runtime, GPU_RUNTIME if offloaded or vision_on_gpu else 0),
        Part("prefix_state", prefix_state),
        Part("shared_contexts", sum(part.cpu for part in shared), sum(part.gpu for part in shared)),
        Part("kept_conversations", run.kept_states),  # in Python's memory, offloaded or not
    )
    apart = (VISION_PHASE, TEXT_PHASE) if onnx and run.vision_first else ()
    return MemoryPlan(parts, run.n_ctx, run.cache_type, run.vision_engine if vision else "mtmd", apart)


def shared_context_part(dims: TextDims, shared: SharedContext, offloaded: int) -> Part:
    """A BatchDecoder's context: its KV cache (split as the run's is when blocks go to a GPU), its compute buffer for
    n_seq tokens and their logits, and one conversation's state copied in or out through a buffer; and the other
    n_seq - 1 conversations answered beside the run's, each in a context of its own (KV cache and compute buffer)."""
    each = min(shared.conversation_ctx or shared.n_ctx, shared.n_ctx)
    # the others' own contexts are the Chats they run in (serve: 4096 cells by default), not their share of the pool
    own = shared.chat_ctx or each
    cache_type = shared.cache_type
    on_cpu = dims.n_layer - offloaded
    others = shared.n_seq - 1
    kv_gpu = kv_cache_bytes(dims, shared.n_ctx, cache_type, offloaded) + others * kv_cache_bytes(
        dims, own, cache_type, offloaded
    )
    kv_cpu = kv_cache_bytes(dims, shared.n_ctx, cache_type, on_cpu) + others * kv_cache_bytes(
        dims, own, cache_type, on_cpu
    )
    # one logits row per sequence in its output buffer (text_compute_bytes counts one)
    compute = text_compute_bytes(dims, shared.n_ctx, cache_type, shared.n_seq, n_ubatch=shared.n_seq)
    compute += FLOAT * dims.n_vocab * others + others * text_compute_bytes(dims, own, cache_type, n_outputs=1)
    moving = sequence_state_bytes(dims, each, cache_type)
    if offloaded:
        return Part("shared_context", kv_cpu + moving, kv_gpu + compute)
    return Part("shared_context", kv_cpu + compute + moving)


def cache_type_candidates(dims: TextDims, requested: str | None) -> tuple[str, ...]:
    """The user's choice alone, else every type this model's heads allow, largest first."""
    if requested:
        return (requested,)
    return tuple(t for t in KV_CACHE_TYPES if cache_type_fits_model(dims, t))


def plan_within(
    text: TextFootprint, vision: VisionFootprint | None, run: RunSettings, limit: int, requested: str | None = None
) -> tuple[MemoryPlan, bool]:
    """The plan with the first cache type that fits under `limit`, or the smallest plan and False."""
    plan = None
    for cache_type in cache_type_candidates(text.dims, requested):
        plan = plan_memory(text, vision, dataclasses.replace(run, cache_type=cache_type))
        if plan.total <= limit:
            return plan, True
    return plan, False
