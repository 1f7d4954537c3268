"""The loaded model pair under a Model and its Chats: the engine (loaded on first use), the vision encoder it
chose, the memory budget, the context the model's own questions use, and the frames' vision context.

Every conversation owns a context of its own (Chat's ChatSession, the Model's asks here): nothing is swapped
in and out of the engine, so asking the model between two chat turns leaves the chat where it was.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from smolcli.api.detail import mmproj_for_detail
from smolcli.api.memory import MemoryBudget
from smolcli.api.options import LoadOptions
from smolcli.errors import BadInput, ContextFull, ModelFileError
from smolcli.models.dims import VisionDims
from smolcli.runtime.decoding.batch_decoder import BatchDecoder
from smolcli.runtime.gguf.gguf_file import GGUFSummary
from smolcli.runtime.gguf.model_files import ModelFiles
from smolcli.runtime.llama.context import LlamaContext
from smolcli.runtime.llama.context_size import chat_context_size
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.planning.memory_plan import MemoryPlan, SharedContext
from smolcli.runtime.video.video_prompt import FrameVision
from smolcli.runtime.vision.images import RGBImage

# a BatchDecoder's cells per conversation by default: an image question and its answer, in the shared pool
PARALLEL_CELLS_EACH = 2048


@dataclass
class EngineReady:
    """What getting the engine ready for a question took: its load (or the vision file's) and images encoded ahead."""

    engine: Engine
    load_seconds: float
    encoded_ahead_seconds: float  # added to the question's encode time, after its counter snapshot


class LoadedPair:
    """One SmolVLM pair's loaded parts, shared by the Model's questions and its conversations."""

    def __init__(self, files: ModelFiles, options: LoadOptions):
        self.files = files  # the mmproj as converted; image detail may load a copy of it instead
        self.options = options
        self._engine: Engine | None = None
        self._ask_context: LlamaContext | None = None  # the Model's own questions', kept while it fits the next
        self._frames: FrameVision | None = None  # video frames' vision context, one per pair
        self.warned_v1_video = False  # the note that a SmolVLM (v1) release was not trained on video, given once
        self.conversations: list = []  # open Chats, each with its own context: closed before the weights
        self.decoders: list[BatchDecoder] = []  # BatchDecoders made for this pair: their contexts are in every plan

    # --- lifetime ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The loaded engine (loaded now if it was not)."""
        if self._engine is None:
            text_only = ModelFiles(self.files.model, None)  # the vision encoder loads with the first image
            self._engine = Engine(text_only, self.engine_options)
        return self._engine

    @functools.cached_property
    def engine_options(self) -> EngineOptions:
        """Made once: the ONNX encoder that encodes a first question's images ahead is the engine's."""
        return self.options.engine_options()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def track(self, conversation) -> None:
        """A conversation (anything with close()) to close with the pair."""
        self.conversations.append(conversation)

    def forget(self, conversation) -> None:
        """A conversation that closed itself."""
        if conversation in self.conversations:
            self.conversations.remove(conversation)

    def close(self) -> None:
        """Free the conversations, the contexts, the vision encoders and the weights; safe to call twice."""
        for conversation in list(self.conversations):
            conversation.close()
        self.conversations.clear()
        if self._frames is not None:
            self._frames.close()
            self._frames = None
        if self._ask_context is not None:
            self._ask_context.free()
            self._ask_context = None
        if self._engine is not None:
            self._engine.close()  # frees any context still open before the weights
            self._engine = None

    # --- what a question needs -----------------------------------------------------------

    def vision_for(self, images: list[RGBImage], image_size: int | None = None, max_tiles: int | None = None):
        """The mmproj these images need at the detail asked for (None without images)."""
        if not images:
            return None
        if self.files.mmproj is None:
            raise ModelFileError(
                f"{self.files.model.path}: no mmproj-*.gguf beside it; images need one: pass it as {{mmproj}}"
            )
        image_size = image_size if image_size is not None else self.options.image_size
        max_tiles = max_tiles if max_tiles is not None else self.options.max_tiles
        return mmproj_for_detail(self.files.mmproj, images, image_size, max_tiles)

    def check_image_count(self, count: int) -> None:
        """ContextFull when `count` images cannot fit however small they are: each takes one tile's tokens at least."""
        if count == 0 or self.files.mmproj is None:
            return
        tokens = VisionDims.from_gguf(self.files.mmproj.metadata).tokens_per_tile
        summary = self.files.model
        limit = self.options.ctx or summary.metadata.get(f"{summary.architecture}.context_length") or 0
        if limit and count * tokens >= limit:
            raise ContextFull(
                f"{count} images need at least {count * tokens} tokens ({tokens} each) but the context holds"
                f" {limit}; ask about fewer images at a time",
                n_past=0,
                n_new=count * tokens,
                n_ctx=limit,
            )

    def memory_budget(
        self, vision: GGUFSummary | None, images: list[RGBImage], vision_first: bool = False, reuse_prefix: bool = False
    ) -> MemoryBudget | None:
        """With max_memory: what plans this run's peak (None without a limit), the open BatchDecoders' contexts
        beside it; vision_first: see ready(); reuse_prefix: the prompt goes in through the prefix cache (an ask)."""
        limit = self.options.memory_limit
        if limit is None:
            return None  # no options to build (an embedding cache, a GPU query) for a plan nobody asked for
        return MemoryBudget.for_run(
            limit,
            ModelFiles(self.files.model, vision),
            self.engine_options,
            images,
            self.options.cache_type,
            vision_first,
            reuse_prefix,
            tuple(self.shared_context(d.n_seq, d.shared.n_ctx) for d in self.decoders if not d.shared.freed),
            self.parked_bytes(),
        )

    # --- decoding several conversations together ----------------------------------------

    @property
    def conversation_cells(self) -> int:
        """A conversation's cells in a BatchDecoder's pool by default: {ctx}, or PARALLEL_CELLS_EACH."""
        return self.options.ctx or PARALLEL_CELLS_EACH

    def shared_context(self, n_seq: int, n_ctx: int) -> SharedContext:
        cache_type = self.options.cache_type or "f16"
        return SharedContext(n_seq, n_ctx, cache_type, min(self.conversation_cells, n_ctx), self.chat_cells)

    @property
    def chat_cells(self) -> int:
        """The context a conversation (Chat) starts with: {ctx}, or chat's minimum within the model's own."""
        if self.options.ctx:
            return self.options.ctx
        summary = self.files.model
        return chat_context_size(0, 0, summary.metadata.get(f"{summary.architecture}.context_length") or 0)

    def parked_bytes(self) -> int:
        """The saved states of this pair's parked Chats (Chat.park()): counted in every plan, beside the run."""
        return sum(getattr(conversation, "parked_bytes", 0) for conversation in self.conversations)

    def check_serving(self, n_seq: int, kept: int) -> MemoryPlan | None:
        """With max_memory: the plan of a conversation answered beside n_seq - 1 more decoded together (a BatchDecoder
        when n_seq > 1) and up to `kept` more parked between requests, their part the byte budget they are held to
        (MemoryBudget.plan_keeping); MemoryPlanRefused (one line naming the sequences that fit) when the conversation
        and the decoder do not fit: kept conversations never refuse, they are held to what is left."""
        if n_seq < 1:
            raise BadInput(f"decoding together needs at least 1 conversation, not {n_seq}")
        budget = self.memory_budget(self.files.mmproj, [])
        if budget is None:
            return None
        own = self.chat_cells  # each request runs in a Chat of its own, whatever its share of the decoder's pool
        each = self.conversation_cells

        def plan(beside: MemoryBudget) -> MemoryPlan:
            if n_seq == 1:
                return beside.plan(own)
            return beside.plan_beside_decoder(own, n_seq, lambda n: self.shared_context(n, n * each))

        return budget.plan_keeping(kept, own, plan) if kept else plan(budget)

    def check_decoder(self, n_seq: int, n_ctx: int | None = None) -> tuple[int, MemoryPlan | None]:
        """The cells of a BatchDecoder of n_seq sequences (n_ctx, or n_seq conversations' cells), and with max_memory
        the plan of a conversation beside it: MemoryPlanRefused (one line naming the most sequences that fit) when
        it does not fit."""
        if n_seq < 1:
            raise BadInput(f"decoding together needs at least 1 conversation, not {n_seq}")
        cells = n_ctx or n_seq * self.conversation_cells
        budget = self.memory_budget(self.files.mmproj, [])
        if budget is None:
            return cells, None
        plan = budget.plan_beside_decoder(
            self.conversation_cells, n_seq, lambda n: self.shared_context(n, n_ctx or n * self.conversation_cells)
        )
        return cells, plan

    def add_decoder(self, decoder: BatchDecoder) -> None:
        self.decoders = [d for d in self.decoders if not d.shared.freed] + [decoder]
        self.track(decoder)

    def ready(self, vision: GGUFSummary | None, images: list[RGBImage], mtmd_only: bool) -> EngineReady:
        """The engine with this vision file in use, and what that took.

        A first question on a model opened but not loaded (Model.open, as `smolcli ask` opens it;
        smolcli.load() loads at once) sends its images through the ONNX encoder before the language model
        loads, and frees the session after: the run's peak is then the larger of the two, not their sum.
        """
        started = time.perf_counter()
        cold = not self.loaded
        encoder, cache = self.engine_options.vision_encoder, self.engine_options.embedding_cache
        ahead = None
        if cold and vision is not None and images and encoder is not None and not mtmd_only:
            ahead = encoder.encode_ahead(vision, images, cache)
        engine = self.engine
        if vision is not None:
            engine.use_mmproj(vision, mtmd_only=mtmd_only)
        load_seconds = engine.load_seconds if cold else (time.perf_counter() - started)
        if ahead is None:
            return EngineReady(engine, load_seconds, 0.0)
        return EngineReady(engine, load_seconds + ahead.session_seconds, ahead.encode_seconds)

    def ask_context(self, n_ctx: int, cache_type: str) -> LlamaContext:
        """An empty context for one of the Model's questions: the last one's, cleared, when it is large enough
        (exactly n_ctx with a fixed {ctx}) and of this cache type; else a new one in its place."""
        context = self._ask_context
        if context is not None and not context.freed and context.cache_type == cache_type:
            if context.n_ctx == n_ctx if self.options.ctx else context.n_ctx >= n_ctx:
                context.clear()
                return context
        if context is not None:
            context.free()
            self._ask_context = None
        self._ask_context = self.engine.new_context(n_ctx, cache_type)
        return self._ask_context

    def frame_vision(self) -> FrameVision:
        """The video frames' vision context (one per pair, freed with it)."""
        if self._frames is None or self._frames.closed:
            self._frames = FrameVision(self.engine, self.files.mmproj)
        return self._frames
