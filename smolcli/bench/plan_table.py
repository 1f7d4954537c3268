"""What each registry model takes, in disk and at its memory peak, and which machines it fits.

Nothing is downloaded: file sizes are estimated from the release dimensions with llama.cpp's
per-tensor quantization rules (convert/quant_layout.py), the peak by runtime/planning/memory_plan.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from smolcli.api.loaded_pair import PARALLEL_CELLS_EACH
from smolcli.convert.quant_layout import mmproj_layout
from smolcli.models.dims import VisionDims
from smolcli.models.registry import MODELS, RegisteredModel
from smolcli.models.smolvlm_shapes import SHAPES
from smolcli.runtime.llama.context_size import ask_context_size, chat_context_size
from smolcli.runtime.planning.memory_plan import (
    MemoryPlan,
    RunSettings,
    SharedContext,
    TextFootprint,
    VisionFootprint,
    image_tokens,
    plan_memory,
    sequence_state_bytes,
    tiles_per_image,
)

QUANTS = ("Q4_K_M", "Q8_0", "F16")
MMPROJ_TYPE = "Q8_0"
PHOTO = (1024, 768)
ANSWER_TOKENS = 256
# the prompt's text: the question and chat format, and the markers mtmd puts around each tile
PROMPT_TEXT_TOKENS = 32
TEXT_TOKENS_PER_TILE = 4
GB = 10**9
PARALLEL = (2, 4)  # serve --parallel N's shared context, shown beside the table
CONVERSATION_CELLS = PARALLEL_CELLS_EACH  # each conversation's cells in it by default (LoadedPair.conversation_cells)


@dataclass(frozen=True)
class Device:
    name: str
    label: str  # the table's column
    memory: int
    reserved: int  # what the system itself keeps
    offloads: bool  # runs every layer on a GPU that shares the same memory
    note: str

    @property
    def usable(self) -> int:
        return self.memory - self.reserved


DEVICES = (
    Device(
        "Jetson Orin Nano 8 GB",
        "Jetson",
        8 * GB,
        1_500_000_000,
        True,
        "unified memory, so CPU and GPU parts add up; ~1.5 GB for the OS (JetPack without a desktop); "
        "every layer on the GPU, which adds a CUDA runtime",
    ),
    Device("Raspberry Pi class 4 GB", "Pi 4GB", 4 * GB, 600_000_000, False, "~0.6 GB for the OS; CPU only"),
    Device("laptop 16 GB", "laptop", 16 * GB, 4 * GB, False, "~4 GB for the OS, a desktop and a browser; CPU only"),
)


@dataclass(frozen=True)
class PlanRow:
    model: RegisteredModel
    quant: str
    model_bytes: int
    mmproj_bytes: int
    image_chunks: int  # tiles and the global view
    prompt_tokens: int
    plan: MemoryPlan  # CPU only
    device_plans: tuple[MemoryPlan, ...]  # one per DEVICES entry
    prefix_state: int  # the photo prompt's prefix state, held once more while the prefix cache stores or restores it
    parallel: dict[int, int]  # serve --parallel N: what its shared context and the other conversations add
    # serve --conversations: what the photo conversation (prompt and answer) adds, parked between requests as its
    # saved state; kept_full: what one of a Chat's full context would (the most one can hold)
    kept_each: int
    kept_full: int

    def as_dict(self) -> dict:
        return {
            "model": self.model.name,
            "repo_id": self.model.repo_id,
            "quant": self.quant,
            "mmproj_type": MMPROJ_TYPE,
            "model_bytes": self.model_bytes,
            "mmproj_bytes": self.mmproj_bytes,
            "image": f"{PHOTO[0]}x{PHOTO[1]}",
            "image_chunks": self.image_chunks,
            "prompt_tokens": self.prompt_tokens,
            "answer_tokens": ANSWER_TOKENS,
            "n_ctx": self.plan.n_ctx,
            "cache_type": self.plan.cache_type,
            "peak_bytes": self.plan.total,
            "parts": {p.name: p.total for p in self.plan.parts},
            "prefix_state_bytes": self.prefix_state,
            "parallel_bytes": {str(n): size for n, size in self.parallel.items()},
            "kept_conversation_bytes": self.kept_each,
            "kept_conversation_full_bytes": self.kept_full,
            "devices": [
                {"name": d.name, "usable_bytes": d.usable, "peak_bytes": p.total, "fits": p.total <= d.usable}
                for d, p in zip(DEVICES, self.device_plans, strict=True)
            ],
        }


def plan_row(model: RegisteredModel, quant: str) -> PlanRow:
    shape = SHAPES[model.shape]
    text = TextFootprint.from_shape(shape["text"], quant)
    dims = VisionDims.from_shape(shape)
    vision = VisionFootprint(dims, mmproj_layout(dims, MMPROJ_TYPE).file_bytes)
    chunks = tiles_per_image(dims, *PHOTO)
    prompt = image_tokens(dims, [PHOTO]) + TEXT_TOKENS_PER_TILE * chunks + PROMPT_TEXT_TOKENS
    n_ctx = ask_context_size(prompt, ANSWER_TOKENS, text.dims.n_ctx_train)
    device_plans = tuple(
        plan_memory(text, vision, RunSettings(n_ctx, "f16", (PHOTO,), n_gpu_layers=-1 if d.offloads else 0))
        for d in DEVICES
    )
    cpu_only = plan_memory(text, vision, RunSettings(n_ctx, "f16", (PHOTO,)))
    # the ONNX encoder's prompts only (the table plans mtmd's): the prefix's own tokens, not the whole context
    prefix_state = sequence_state_bytes(text.dims, prompt, "f16")
    chat_cells = chat_context_size(0, 0, text.dims.n_ctx_train)  # a conversation's own context (LoadedPair.chat_cells)
    parallel = {}
    for n_seq in PARALLEL:
        shared = SharedContext(n_seq, n_seq * CONVERSATION_CELLS, "f16", CONVERSATION_CELLS, chat_cells)
        run = RunSettings(n_ctx, "f16", (PHOTO,), shared_contexts=(shared,))
        parallel[n_seq] = plan_memory(text, vision, run).part("shared_contexts").total
    kept_each = sequence_state_bytes(text.dims, prompt + ANSWER_TOKENS, "f16")
    kept_full = sequence_state_bytes(text.dims, chat_cells, "f16")
    return PlanRow(
        model,
        quant,
        text.total,
        vision.total,
        chunks,
        prompt,
        cpu_only,
        device_plans,
        prefix_state,
        parallel,
        kept_each,
        kept_full,
    )


def plan_rows() -> list[PlanRow]:
    return [plan_row(model, quant) for model in MODELS for quant in QUANTS]
