"""`smolcli.load()` and `Model`: one loaded SmolVLM pair that answers questions about images.

This is the run facade every front end stands on: it resolves the model reference (a path, or a
name through the store and the Hub), plans image detail and memory, builds the engine's options
and its context, and hands back an Answer. The CLI's `ask`, `chat` and `demo` are thin over it.
"""

from __future__ import annotations

import atexit
import functools
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from smolcli.api.adapters import check_adapters
from smolcli.api.answer import Answer, AnswerStream, answer_from, counters_since, usage_and_timings
from smolcli.api.detail import mmproj_for_detail
from smolcli.api.memory import MemoryBudget
from smolcli.api.options import GenerationSettings, LoadOptions
from smolcli.api.resolve import model_files
from smolcli.errors import BadInput, ContextFull, ModelFileError
from smolcli.runtime.chat.prompting import first_turn, place_images
from smolcli.runtime.decoding.generation import Generation, generate_pieces
from smolcli.runtime.decoding.sampling import Sampler
from smolcli.runtime.decoding.utf8_guard import Utf8Guard
from smolcli.runtime.gguf.gguf_file import GGUFSummary
from smolcli.runtime.gguf.model_files import ModelFiles
from smolcli.runtime.llama.context_size import ask_context_size, check_prompt_fits
from smolcli.runtime.llama.engine import ContextState, Engine, EngineOptions
from smolcli.runtime.planning.memory_plan import VisionDims
from smolcli.runtime.vision.images import RGBImage, image_from

if TYPE_CHECKING:
    from smolcli.api.chat import Chat

Report = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


def load(
    model: str | Path,
    *,
    mmproj: str | Path | None = None,
    n_gpu_layers: int | None = None,
    mmproj_offload: bool = True,
    threads: int | None = None,
    ctx: int | None = None,
    cache_type: str | None = None,
    max_memory: str | int | None = None,
    embedding_cache: bool = True,
    repack_weights: bool = False,
    image_size: int | None = None,
    max_tiles: int | None = None,
    verbose: bool = False,
    offline: bool = False,
    lora: Sequence = (),
    vision_engine: str = "auto",
    vision_precision: str = "auto",
    report: Report = _quiet,
) -> "Model":
    """Load a SmolVLM pair: a registry name, a Hub repo id, a language-model GGUF or a folder holding a pair.

    A name is pulled (downloaded and converted) on first use and read from the local store from
    then on. The defaults are the CLI's: every layer on the GPU when llama.cpp was built with one,
    a context sized to each prompt, the image-embedding cache on. `lora` stacks LoRA adapter GGUFs
    (`smolcli convert-adapter`) on the model: 'a.gguf', 'a.gguf:0.5' or (path, scale). `report` receives progress lines
    (a pull's, for one).

    >>> import smolcli
    >>> with smolcli.load("smolvlm-256m", max_tiles=4) as model:          # doctest: +SKIP
    ...     print(model.ask("What is in this image?", images=["photo.jpg"]).text)
    """
    options = LoadOptions(
        mmproj=mmproj,
        n_gpu_layers=n_gpu_layers,
        mmproj_offload=mmproj_offload,
        threads=threads,
        ctx=ctx,
        cache_type=cache_type,
        max_memory=max_memory,
        embedding_cache=embedding_cache,
        repack_weights=repack_weights,
        image_size=image_size,
        max_tiles=max_tiles,
        verbose=verbose,
        offline=offline,
        lora=tuple(lora) if not isinstance(lora, (str, Path)) else lora,
        vision_engine=vision_engine,
        vision_precision=vision_precision,
    )
    opened = Model.open(model, options, report=report)
    try:
        opened.engine  # noqa: B018 - load() loads now, so that a bad file fails here and not at the first question
    except BaseException:
        opened.close()
        raise
    return opened


# Models not closed by their user are closed at interpreter exit, while llama.cpp is still loaded:
# freeing them later, from __del__ during teardown, is what crashes or prints tracebacks.
_OPEN: "weakref.WeakSet[Model]" = weakref.WeakSet()


@atexit.register
def _close_open_models() -> None:
    for model in list(_OPEN):
        model.close()


def answer_after_prompt(
    engine: Engine,
    settings: GenerationSettings,
    constraint,
    prompt,
    before,
    load_seconds: float,
    with_images: bool,
    memory_report,
    logprobs: int | None,
    stream: bool,
    amend: Callable[[Answer], Answer] | None = None,
) -> Answer | AnswerStream:
    """The answer to a prompt already evaluated (`prompt`: its n_tokens and n_image_tokens; `before`: the
    engine's counters before it; `constraint`: settings.constraint(), checked before anything loaded): one
    sampler, the UTF-8 guard under a grammar, the Answer or its stream.
    `amend` adds what one kind of question knows to the Answer (a video's summary)."""
    sampler = Sampler(settings.sampling(), constraint.gbnf if constraint else None, engine.vocab)
    n_tokens, n_image_tokens = prompt.n_tokens, prompt.n_image_tokens

    def finish(generation: Generation) -> Answer:
        sampler.close()
        done = counters_since(before, engine.counters)
        usage, timings = usage_and_timings(done, n_tokens, n_image_tokens, len(generation.tokens), load_seconds)
        answer = answer_from(
            generation, engine, usage, timings, with_images, memory_report, constraint, settings.max_tokens
        )
        return amend(answer) if amend else answer

    guard = Utf8Guard(engine.utf8_vocabulary()) if constraint else None
    answer = AnswerStream(generate_pieces(engine, sampler, settings.limits(), logprobs, guard), finish)
    return answer if stream else answer.read()


class Model:
    """A SmolVLM pair, loaded on first use; close it (or use `with`) to free llama.cpp's and mtmd's memory.

    One question at a time: a Model is not for several threads at once.
    """

    def __init__(self, files: ModelFiles, options: LoadOptions):
        self.files = files  # the mmproj as converted; image detail may load a copy of it instead
        self.options = options
        self._engine: Engine | None = None
        self._holder: object = self  # whose context the engine holds: this model's asks, or a Chat
        self._context: ContextState | None = None  # the asks' context while a chat holds the engine
        self._chats: list = []
        _OPEN.add(self)

    @classmethod
    def open(cls, model: str | Path, options: LoadOptions | None = None, report: Report = _quiet) -> "Model":
        """The pair found and checked, nothing loaded yet: front ends plan memory before the weights load."""
        options = options or LoadOptions()
        # an adapter that changes the vision encoder brings its merged mmproj (an explicit mmproj wins)
        merged_mmproj = check_adapters(options.lora)
        mmproj = options.mmproj or merged_mmproj
        return cls(model_files(model, mmproj, need_vision=False, offline=options.offline, report=report), options)

    # --- lifetime ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The loaded engine (loaded now if it was not): the runtime layer, for tests and benchmarks."""
        if self._engine is None:
            text_only = ModelFiles(self.files.model, None)  # the vision encoder loads with the first image
            self._engine = Engine(text_only, self._engine_options)
        return self._engine

    @functools.cached_property
    def _engine_options(self) -> EngineOptions:
        """Made once: the ONNX encoder that encodes a first question's images ahead is the engine's."""
        return self.options.engine_options()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def close(self) -> None:
        """Free the contexts, the vision encoder and the weights; safe to call twice."""
        for chat in list(self._chats):
            chat.close()
        frames = self.__dict__.pop("_frame_vision", None)  # video frames' vision context (api/video.py)
        if frames is not None:
            frames.close()
        if self._engine is not None:
            self._engine.free_context(self._context)
            self._context = None
            self._engine.close()
            self._engine = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a collected Model has no one to tell
            pass

    # --- the parts a question needs ------------------------------------------------------

    def _hold(self, holder: object) -> Engine:
        """Give the engine's context to `holder` (this model's asks or a Chat), keeping the other's aside."""
        engine = self.engine
        if self._holder is holder:
            return engine
        previous = engine.detach_context()
        if self._holder is self:
            self._context = previous
        else:
            self._holder._context = previous
        incoming = self._context if holder is self else holder._context
        engine.attach_context(incoming)
        if holder is self:
            self._context = None
        else:
            holder._context = None
        self._holder = holder
        return engine

    def _release(self, chat) -> None:
        """A closing chat: free its context, wherever it is."""
        if self._engine is None:
            return
        if self._holder is chat:
            self._engine.free_context(self._engine.detach_context())
            self._holder = self
            self._engine.attach_context(self._context)
            self._context = None
        else:
            self._engine.free_context(chat._context)
        chat._context = None

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
        self, vision: GGUFSummary | None, images: list[RGBImage], vision_first: bool = False
    ) -> MemoryBudget | None:
        """With max_memory: what plans this run's peak (None without a limit); vision_first: see _encode_ahead."""
        limit = self.options.memory_limit
        if limit is None:
            return None  # no options to build (an embedding cache, a GPU query) for a plan nobody asked for
        return MemoryBudget.for_run(
            limit,
            ModelFiles(self.files.model, vision),
            self._engine_options,
            images,
            self.options.cache_type,
            vision_first,
        )

    def _engine_with_vision(
        self, holder: object, vision: GGUFSummary | None, images: list[RGBImage], mtmd_only: bool
    ) -> tuple[Engine, float, float]:
        """The engine held for `holder` with this vision file in use: (engine, seconds it took to load, seconds
        spent encoding images ahead). The caller adds the last to the engine's counters after its snapshot, so
        that they count as this question's encoding.

        A first question on a model opened but not loaded (Model.open, as `smolcli ask` opens it;
        smolcli.load() loads at once) sends its images through the ONNX encoder before the language model
        loads, and frees the session after: the run's peak is then the larger of the two, not their sum.
        """
        started = time.perf_counter()
        cold = not self.loaded
        encoder, cache = self._engine_options.vision_encoder, self._engine_options.embedding_cache
        ahead = None
        if cold and vision is not None and images and encoder is not None and not mtmd_only:
            ahead = encoder.encode_ahead(vision, images, cache)
        engine = self._hold(holder)
        if vision is not None:
            engine.use_mmproj(vision, mtmd_only=mtmd_only)
        load_seconds = engine.load_seconds if cold else (time.perf_counter() - started)
        if ahead is None:
            return engine, load_seconds, 0.0
        return engine, load_seconds + ahead.session_seconds, ahead.encode_seconds

    # --- asking --------------------------------------------------------------------------

    def ask(
        self,
        prompt: str,
        images: Sequence | None = None,
        *,
        system: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 0.95,
        top_k: int = 40,
        seed: int | None = None,
        stop: Iterable[str] = (),
        ignore_eos: bool = False,
        logprobs: int | None = None,
        json_schema: dict | None = None,
        grammar: str | None = None,
        stream: bool = False,
        video=None,
        fps: float | None = None,
        max_frames: int | None = None,
        report: Report = _quiet,
    ) -> Answer | AnswerStream:
        """Answer one question about zero or more images (paths, bytes or PIL images).

        Images go before the text unless `<image>` markers in the prompt place them. Greedy by
        default: the same input gives the same answer. `logprobs=N` keeps each generated token's
        log-probability and the N likeliest alternatives. `stream=True` returns an AnswerStream:
        iterate it for the text as it is generated; its `answer` holds the Answer at the end.
        `json_schema` makes the answer JSON that validates against it (`answer.json` holds the
        value; a schema the grammar cannot enforce is refused before anything runs, and an answer
        cut by max_tokens raises AnswerTruncated); `grammar` holds it to a GBNF grammar instead.

        >>> answer = model.ask("Describe it.", images=["photo.jpg"], max_tokens=64)   # doctest: +SKIP
        >>> for piece in model.ask("Describe it.", images=[pil_image], stream=True):  # doctest: +SKIP
        ...     print(piece, end="", flush=True)

        `video` (a path, '-' for stdin, or the file's bytes) asks about a clip, laid out as SmolVLM2
        was trained (smolcli.api.video); `fps` and `max_frames` override the release's sampling,
        and `report` receives its progress lines.
        """
        settings = GenerationSettings(
            max_tokens, temperature, top_p, top_k, seed, tuple(stop), ignore_eos, json_schema, grammar
        )
        constraint = settings.constraint()  # a schema the grammar cannot enforce is refused before anything runs
        if logprobs is not None and logprobs < 0:
            raise BadInput(f"{{logprobs}} must be 0 or more alternatives, not {logprobs}")
        images = list(images or ())
        self.check_image_count(len(images))  # before a single image is read: 5000 of them take minutes
        pictures = [image_from(item) for item in images]
        if not prompt.strip() and not pictures and video is None:
            raise BadInput("the prompt is empty: give a question")
        if video is not None:
            from smolcli.api.video import ask_video

            return ask_video(self, prompt, video, pictures, settings, logprobs, stream, system, fps, max_frames, report)
        text = first_turn(place_images(prompt, len(pictures)), system)
        vision = self.vision_for(pictures)
        cold = not self.loaded
        budget = self.memory_budget(vision, pictures, vision_first=cold)
        chosen = None  # under max_memory: the vision engine the plan fits with
        if budget:
            # before loading: the images' tokens alone give a context no larger than the real one
            n_ctx = self.options.ctx or ask_context_size(budget.image_tokens, max_tokens, budget.n_ctx_train)
            chosen = budget.plan(n_ctx).vision_engine

        engine, load_seconds, encoded_ahead = self._engine_with_vision(self, vision, pictures, chosen == "mtmd")
        before = engine.counters.snapshot()
        engine.counters.encode_seconds += encoded_ahead
        tokenized = engine.tokenize(text, pictures)
        try:
            context_started = time.perf_counter()
            n_ctx = self.options.ctx or ask_context_size(tokenized.n_tokens, max_tokens, engine.n_ctx_train)
            plan = budget.plan(n_ctx, chosen) if budget else None
            self._fresh_context(engine, n_ctx, plan.cache_type if plan else (self.options.cache_type or "f16"))
            load_seconds += time.perf_counter() - context_started
            fix = (
                "raise {ctx}"
                if self.options.ctx
                else f"the model holds at most {engine.n_ctx_train} tokens; shorten the prompt"
            )
            check_prompt_fits(
                tokenized.n_tokens, tokenized.n_image_tokens, engine.n_ctx, f"{fix} or use fewer or smaller images"
            )
            engine.evaluate(tokenized)
        finally:
            tokenized.free()
        memory_report = budget.report(plan) if plan else None
        return answer_after_prompt(
            engine,
            settings,
            constraint,
            tokenized,
            before,
            load_seconds,
            bool(pictures),
            memory_report,
            logprobs,
            stream,
        )

    def _fresh_context(self, engine: Engine, n_ctx: int, cache_type: str) -> None:
        """An empty context of at least n_ctx tokens: the last question's, cleared, when it is large enough."""
        reusable = (
            engine.ctx is not None
            and engine.options.cache_type == cache_type
            and (engine.n_ctx == n_ctx if self.options.ctx else engine.n_ctx >= n_ctx)
        )
        if reusable:
            engine.clear()
            return
        engine.options.cache_type = cache_type
        engine.create_context(n_ctx)

    def chat(self, system: str | None = None, images: Sequence | None = None, **settings) -> "Chat":
        """A conversation: each turn stays in the KV cache, so a follow-up evaluates only itself.

        `images` go with the first message. Settings: max_tokens, temperature, top_p, top_k, seed,
        stop (GenerationSettings), and ctx (default: this model's, or sized from the first message).

        >>> chat = model.chat(system="Be brief.")        # doctest: +SKIP
        >>> chat.send("Hi", images=["a.jpg"]).text        # doctest: +SKIP
        >>> chat.send("And the colors?").text             # doctest: +SKIP
        """
        from smolcli.api.chat import Chat

        made = Chat(self, system, images, **settings)
        self._chats.append(made)
        return made

    def __repr__(self) -> str:
        return f"<smolcli.Model {self.files.model.path.name}{' (loaded)' if self.loaded else ''}>"
