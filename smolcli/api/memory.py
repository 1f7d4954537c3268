"""max_memory: read the size, plan a run before the weights load, pick the KV-cache type or refuse with the parts."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable, NamedTuple

from smolcli.errors import BadInput, MemoryPlanRefused
from smolcli.runtime.gguf.model_files import ModelFiles
from smolcli.runtime.llama.engine import EngineOptions
from smolcli.runtime.planning.memory_plan import (
    MemoryPlan,
    RunSettings,
    SharedContext,
    TextFootprint,
    VisionFootprint,
    image_tokens,
    plan_within,
    sequence_state_bytes,
)
from smolcli.runtime.vision.images import RGBImage
from smolcli.runtime.vision.onnx_vision import KEPT_IMAGES
from smolcli.util.units import size_text

ACCEPTED_FORMS = "2G, 1.5GB, 800M, 512MiB or plain bytes"
SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?)b?|b)?", re.IGNORECASE)
POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}
# chat sizes its context before the first message is typed: room for that message's text
CHAT_FIRST_MESSAGE_TOKENS = 512
PART_LABELS = {
    "text_weights": "language model",
    "repacked_weights": "repacked weights",
    "vision_weights": "vision encoder",
    "kv_cache": "KV cache",
    "text_compute": "LM compute",
    "vision_compute": "vision compute",
    "images": "images",
    "vision_build": "ONNX file build",
    "runtime": "runtime",
    "prefix_state": "prefix state",
    "shared_contexts": "parallel decoding",
    "kept_conversations": "kept conversations",
}


@dataclass(frozen=True)
class MemoryLimit:
    size: int
    text: str  # as the user typed it


def parse_max_memory(limit: str | int | None) -> MemoryLimit | None:
    """Read max_memory early, so that a typo fails before a model is pulled or loaded: '2G', '512MiB' or bytes."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, str)):
        raise BadInput(f"{{max_memory}} takes a size such as '2G' or a number of bytes, not {limit!r}")
    if isinstance(limit, int):
        if limit <= 0:
            raise BadInput(f"{{max_memory}} {limit} leaves no memory at all; give it as {ACCEPTED_FORMS}")
        return MemoryLimit(limit, str(limit))
    return MemoryLimit(parse_size(limit), limit)


def parse_size(text: str) -> int:
    """'2G' -> 2*10^9, '512MiB' -> 512*2^20, '123' -> 123 bytes."""
    match = SIZE.fullmatch(text.strip())
    if match is None:
        raise BadInput(f"{{max_memory}} {text!r} is not a size; give it as {ACCEPTED_FORMS}")
    number, unit, binary = match.groups()
    if unit is None and "." in number:
        raise BadInput(f"{{max_memory}} {text!r}: plain bytes come whole; give it as {ACCEPTED_FORMS}")
    scale = (1024 if binary else 1000) ** POWERS[unit.lower()] if unit else 1
    size = int(float(number) * scale)
    if size <= 0:
        raise BadInput(f"{{max_memory}} {text!r} leaves no memory at all; give it as {ACCEPTED_FORMS}")
    return size


def prefix_cache_on(options: EngineOptions) -> bool:
    """Whether the engine may store or restore prefix states (llama/prefix_cache.py: bounded to nothing is off, and
    LoRA adapters keep it out; the ONNX layout and the CPU are the plan's to check)."""
    cache = options.prefix_cache
    return cache is not None and cache.max_bytes > 0 and not options.lora


class FramesPlan(NamedTuple):
    plan: MemoryPlan
    fits: bool


@dataclass(frozen=True)
class MemoryBudget:
    limit: MemoryLimit
    text: TextFootprint
    vision: VisionFootprint | None
    run: RunSettings  # n_ctx is filled in by plan(), the cache type by plan_within, the vision engine by plan()
    requested_cache: str | None
    # the vision engines the run may use, tried in order: ("onnx", "mtmd") under auto with ONNX Runtime
    vision_engines: tuple[str, ...] = ("mtmd",)

    @classmethod
    def for_run(
        cls,
        limit: MemoryLimit | None,
        files: ModelFiles,
        options: EngineOptions,
        images: list[RGBImage],
        requested_cache: str | None,
        vision_first: bool = False,
        reuse_prefix: bool = False,
        shared_contexts: tuple[SharedContext, ...] = (),
        kept_states: int = 0,
    ) -> "MemoryBudget | None":
        """None without max_memory: the run goes on as it always has.

        vision_first: the images are encoded before the language model loads (a first question through the
        ONNX encoder, OnnxVisionEncoder.encode_ahead), so the session and the model are planned apart.
        reuse_prefix: the prompt goes in through the prefix cache (an ask), which holds a copy of its prefix's state
        when it stores or restores one. shared_contexts: BatchDecoders alive beside the run (serve --parallel); kept_states:
        the bytes of conversations parked beside it (Chat.park(), serve --conversations)."""
        if limit is None:
            return None
        import llama_cpp

        # a build without GPU support keeps every layer on the CPU whatever -ngl says
        n_gpu_layers = options.n_gpu_layers if llama_cpp.llama_supports_gpu_offload() else 0
        vision = VisionFootprint.from_file(files.mmproj) if files.mmproj is not None else None
        sizes = tuple((image.width, image.height) for image in images) if vision else ()
        encoder = options.vision_encoder
        engines = ("mtmd",)
        if encoder is not None and vision is not None:
            engines = ("onnx", "mtmd") if encoder.fallback_to_mtmd else ("onnx",)
        built = encoder is None or vision is None or encoder.is_built(files.mmproj)
        precision = encoder.runs_for(files.mmproj) if encoder is not None and vision is not None else "int8"
        run = RunSettings(
            0,
            "f16",
            sizes,
            n_gpu_layers,
            options.mmproj_offload,
            options.repack_weights,
            onnx_built=built,
            vision_first=vision_first and len(images) <= KEPT_IMAGES,
            prefix_state=reuse_prefix and prefix_cache_on(options),
            shared_contexts=shared_contexts,
            vision_precision=precision,
            kept_states=kept_states,
        )
        return cls(limit, TextFootprint.from_file(files.model), vision, run, requested_cache, engines)

    @property
    def n_ctx_train(self) -> int:
        return self.text.dims.n_ctx_train

    @property
    def image_tokens(self) -> int:
        """Exact: mtmd cuts every image into tiles of a fixed token count (text around them not included)."""
        return image_tokens(self.vision.dims, self.run.images) if self.vision else 0

    def chat_context_tokens(self) -> int:
        """A first message's worth of tokens: its images and room for its text."""
        return self.image_tokens + CHAT_FIRST_MESSAGE_TOKENS

    def plan(self, n_ctx: int, vision_engine: str | None = None) -> MemoryPlan:
        """The plan for an n_ctx-token context under the limit; a one-line error when none fits.

        Under auto the ONNX encoder is planned first and mtmd when only it fits; vision_engine keeps
        a run to the engine an earlier plan chose.
        """
        plans = []
        for engine in (vision_engine,) if vision_engine else self.vision_engines:
            run = dataclasses.replace(self.run, n_ctx=n_ctx, vision_engine=engine)
            plan, fits = plan_within(self.text, self.vision, run, self.limit.size, self.requested_cache)
            if fits:
                return plan
            plans.append(plan)
        smallest = min(plans, key=lambda plan: plan.total)
        raise MemoryPlanRefused(self._refusal(smallest), plan=smallest, limit=self.limit.size)

    def plan_frames(self, n_ctx: int, n_frames: int) -> FramesPlan:
        """The plan for an n_ctx-token context with a video's n_frames frames besides the images, and whether
        it fits (api/video_plan.py names how many frames would)."""
        run = dataclasses.replace(self.run, n_ctx=n_ctx, frames=n_frames)
        return FramesPlan(*plan_within(self.text, self.vision, run, self.limit.size, self.requested_cache))

    def plan_beside_decoder(self, n_ctx: int, n_seq: int, shared_context: Callable[[int], SharedContext]) -> MemoryPlan:
        """The plan of an n_ctx-token conversation beside a BatchDecoder of n_seq sequences (shared_context(n): its
        context for n), or a one-line refusal naming the most sequences that fit (serve --parallel)."""

        def beside(n: int) -> "MemoryBudget":
            run = dataclasses.replace(self.run, shared_contexts=(*self.run.shared_contexts, shared_context(n)))
            return dataclasses.replace(self, run=run)

        try:
            return beside(n_seq).plan(n_ctx)
        except MemoryPlanRefused as refused:
            plan = refused.plan
        alone = self.plan(n_ctx)  # one conversation without the decoder: its own refusal when even that does not fit
        fits = next((n for n in range(n_seq - 1, 1, -1) if beside(n).fits(n_ctx)), 1)
        shared = plan.part("shared_contexts").total
        fix = f"{{parallel={fits}}} fits" if fits > 1 else "answering one at a time (no {parallel}) fits"
        raise MemoryPlanRefused(
            f"{{parallel={n_seq}}} needs about {size_text(plan.total)} but {{max_memory}} {self.limit.text} allows "
            f"{size_text(self.limit.size)}: decoding {n_seq} conversations of {n_ctx} tokens together takes "
            f"{size_text(shared)} beside one conversation's {size_text(alone.total)}; {fix}, or raise {{max_memory}}",
            plan=plan,
            limit=self.limit.size,
            fits=fits,
        )

    def keeping(self, states: int) -> "MemoryBudget":
        """This budget with `states` bytes of parked conversations beside the run, in place of those it had."""
        return dataclasses.replace(self, run=dataclasses.replace(self.run, kept_states=states))

    def plan_keeping(self, count: int, n_cells: int, plan: Callable[["MemoryBudget"], MemoryPlan]) -> MemoryPlan:
        """plan(budget) with up to `count` conversations parked beside it (serve --conversations), their saved states
        held to a byte budget: count states of n_cells (a Chat's full context), or what the limit leaves beside
        plan(budget) alone when that is less (the least recently used are dropped to stay within it, never a refusal).
        plan's own refusal when it alone does not fit; the plan's kept_conversations part is the budget."""
        alone = plan(self.keeping(0))
        full = count * sequence_state_bytes(self.text.dims, n_cells, alone.cache_type)
        return plan(self.keeping(min(full, self.limit.size - alone.total)))

    def fits(self, n_ctx: int) -> bool:
        try:
            self.plan(n_ctx)
        except MemoryPlanRefused:
            return False
        return True

    def report(self, plan: MemoryPlan) -> dict:
        return {**plan.as_dict(), "limit": self.limit.size}

    def _refusal(self, plan: MemoryPlan) -> str:
        if self.requested_cache:
            cache = f"with the {plan.cache_type} KV cache {{cache_type}} asks for"
        else:
            cache = f"even with a {plan.cache_type} KV cache"
        parts = parts_text(plan)
        fixes = ["a smaller quant of the model (Q4_K_M or Q4_0)"]
        if self.run.repack_weights:
            fixes.append("no {repack_weights}")
        if self.run.images:
            fixes.append("fewer image tiles ({max_tiles=N} or {image_size=PX})")
        if self.run.images and self.vision_engines == ("onnx",):
            fixes.append("{vision_engine=mtmd} (smaller than ONNX Runtime's encoder)")
        if self.requested_cache and self.requested_cache != "q4_0":
            fixes.append("a smaller {cache_type}")
        fixes.append("a smaller {ctx}")
        apart = " (the vision encoder's parts are freed before the language model loads)" if plan.apart else ""
        return (
            f"this run needs about {size_text(plan.total)} but {{max_memory}} {self.limit.text} allows "
            f"{size_text(self.limit.size)}, {cache}: "
            f"{parts}{apart}; try {', '.join(fixes[:-1])} or {fixes[-1]}"
        )


def parts_text(plan: MemoryPlan) -> str:
    """'language model 124 MB, KV cache (2048 tokens) 45 MB, ...': the plan's parts that take memory."""
    return ", ".join(
        f"{PART_LABELS.get(p.name, p.name)}{f' ({plan.n_ctx} tokens)' if p.name == 'kv_cache' else ''} {size_text(p.total)}"
        for p in plan.parts
        if p.total
    )
