"""`smolcli.load()` and `Model`: one loaded SmolVLM pair that answers questions about images.

This is the run facade every front end stands on: it resolves the model reference (a path, or a
name through the store and the Hub), plans image detail and memory, builds the engine's options
and its context, and hands back an Answer. The CLI's `ask`, `chat` and `demo` are thin over it.
"""

from __future__ import annotations

import atexit
import weakref
from pathlib import Path
from typing import Callable, Sequence

from smolcli.api.adapters import check_adapters
from smolcli.api.answer import Answer, AnswerStream
from smolcli.api.ask import ask_question
from smolcli.api.chat import Chat
from smolcli.api.loaded_pair import LoadedPair
from smolcli.api.memory import MemoryBudget
from smolcli.api.options import GenerationSettings, LoadOptions, settings_from, settings_help
from smolcli.api.resolve import model_files
from smolcli.api.turn import Question, checked_constraint
from smolcli.api.video import ClipRequest
from smolcli.errors import BadInput
from smolcli.runtime.decoding.batch_decoder import BatchDecoder
from smolcli.runtime.gguf.gguf_file import GGUFSummary
from smolcli.runtime.gguf.model_files import ModelFiles
from smolcli.runtime.llama.engine import Engine
from smolcli.runtime.planning.memory_plan import MemoryPlan
from smolcli.runtime.vision.images import RGBImage, image_from
from smolcli.util.report import quiet

Report = Callable[[str], None]


def load(
    model: str | Path,
    *,
    report: Report = quiet,
    **settings,
) -> "Model":
    """Load a SmolVLM pair: a registry name, a Hub repo id, a language-model GGUF or a folder holding a pair.

    A name is pulled (downloaded and converted) on first use and read from the local store from
    then on. The defaults are the CLI's: every layer on the GPU when llama.cpp was built with one,
    a context sized to each prompt, the image-embedding cache on. `report` receives progress lines
    (a pull's, for one). The settings (LoadOptions' fields; an unknown one is refused):

    {settings}

    >>> import smolcli
    >>> with smolcli.load("smolvlm-256m", max_tiles=4) as model:          # doctest: +SKIP
    ...     print(model.ask("What is in this image?", images=["photo.jpg"]).text)
    """
    options = settings_from(LoadOptions, settings, "smolcli.load()")
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


class Model:
    """A SmolVLM pair, loaded on first use; close it (or use `with`) to free llama.cpp's and mtmd's memory.

    One question at a time: a Model is not for several threads at once.
    """

    def __init__(self, files: ModelFiles, options: LoadOptions):
        self.pair = LoadedPair(files, options)  # the engine, the contexts, the vision encoder, the memory budget
        _OPEN.add(self)

    @classmethod
    def open(cls, model: str | Path, options: LoadOptions | None = None, report: Report = quiet) -> "Model":
        """The pair found and checked, nothing loaded yet: front ends plan memory before the weights load."""
        options = options or LoadOptions()
        # an adapter that changes the vision encoder brings its merged mmproj (an explicit mmproj wins)
        merged_mmproj = check_adapters(options.lora)
        mmproj = options.mmproj or merged_mmproj
        return cls(model_files(model, mmproj, need_vision=False, offline=options.offline, report=report), options)

    @property
    def files(self) -> ModelFiles:
        return self.pair.files

    @property
    def options(self) -> LoadOptions:
        return self.pair.options

    # --- lifetime ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The loaded engine (loaded now if it was not): the runtime layer, for tests and benchmarks."""
        return self.pair.engine

    @property
    def loaded(self) -> bool:
        return self.pair.loaded

    def close(self) -> None:
        """Free the contexts, the vision encoder and the weights; safe to call twice."""
        self.pair.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a collected Model has no one to tell
            pass

    def vision_for(self, images: list[RGBImage], image_size: int | None = None, max_tiles: int | None = None):
        """The mmproj these images need at the detail asked for (None without images)."""
        return self.pair.vision_for(images, image_size, max_tiles)

    def check_image_count(self, count: int) -> None:
        """ContextFull when `count` images cannot fit however small they are: each takes one tile's tokens at least."""
        self.pair.check_image_count(count)

    def memory_budget(
        self, vision: GGUFSummary | None, images: list[RGBImage], vision_first: bool = False
    ) -> MemoryBudget | None:
        """With max_memory: what plans this run's peak (None without a limit)."""
        return self.pair.memory_budget(vision, images, vision_first)

    # --- asking --------------------------------------------------------------------------

    def ask(
        self,
        prompt: str,
        images: Sequence | None = None,
        *,
        system: str | None = None,
        logprobs: int | None = None,
        stream: bool = False,
        video=None,
        fps: float | None = None,
        max_frames: int | None = None,
        report: Report = quiet,
        store_prefix: bool = True,
        **generation,
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
        and `report` receives its progress lines. `store_prefix=False`: the prompt's prefix state is restored
        from the prefix cache when stored there, but not written when it is not (a batch asks so for images no
        later item shares). How the answer is generated (GenerationSettings' fields;
        an unknown one is refused):

        {settings}
        """
        settings = settings_from(GenerationSettings, generation, "Model.ask()")
        constraint = checked_constraint(settings, logprobs)
        images = list(images or ())
        self.check_image_count(len(images))  # before a single image is read: 5000 of them take minutes
        pictures = [image_from(item) for item in images]
        if not prompt.strip() and not pictures and video is None:
            raise BadInput("the prompt is empty: give a question")
        question = Question(prompt, system, pictures, settings, constraint, logprobs, stream, store_prefix)
        clip = ClipRequest(video, fps, max_frames, report) if video is not None else None
        return ask_question(self.pair, question, clip)  # a clip is one more kind of input

    def chat(self, system: str | None = None, images: Sequence | None = None, **settings) -> Chat:
        """A conversation: each turn stays in the KV cache, so a follow-up evaluates only itself.

        `images` go with the first message. Settings: max_tokens, temperature, top_p, top_k, seed,
        stop (GenerationSettings), and ctx (default: this model's, or sized from the first message).

        >>> chat = model.chat(system="Be brief.")        # doctest: +SKIP
        >>> chat.send("Hi", images=["a.jpg"]).text        # doctest: +SKIP
        >>> chat.send("And the colors?").text             # doctest: +SKIP
        """
        made = Chat(self, system, images, **settings)
        self.pair.track(made)
        return made

    def batch_decoder(self, n_seq: int, n_ctx: int | None = None) -> BatchDecoder:
        """What decodes up to n_seq conversations' answers together (Chat.send(decoder=...)): sequences of one
        llama.cpp context of n_ctx cells (default: n_seq x this model's ctx, or 2048 each), shared by them.
        Closed with the model; answers are the same as decoded alone. With max_memory its context is in every
        later plan, and one that does not fit beside a conversation is refused (check_parallel)."""
        cells, _ = self.pair.check_decoder(n_seq, n_ctx)  # with max_memory: refused before anything loads
        decoder = BatchDecoder(self.engine, n_seq, cells, self.options.cache_type or "f16")
        self.pair.add_decoder(decoder)
        return decoder

    def check_parallel(self, n_seq: int, conversations: int = 0) -> MemoryPlan | None:
        """With max_memory: the plan of n_seq conversations decoded together (serve --parallel: a batch_decoder(n_seq)
        with {ctx} (or 2048) cells each, and each conversation's own Chat context, {ctx} or the 4096 a Chat starts
        with) and up to `conversations` more parked between requests (serve --conversations, keep_conversations()),
        checked before anything loads: MemoryPlanRefused when the conversations answered together do not fit, its one
        line naming how many do. The parked ones' part is the byte budget keep_conversations() gives: never a
        refusal. None without a limit, or for one at a time with none kept."""
        if n_seq <= 1 and not conversations:
            return None
        return self.pair.check_serving(n_seq, conversations)

    def keep_conversations(self, count: int, n_seq: int = 1) -> int | None:
        """The bytes a front end's parked Chats (Chat.park(), up to `count` of them kept between its requests: serve
        --conversations, beside n_seq answered together) may hold without the run passing max_memory: `count` states
        of a Chat's full context, or what the limit leaves beside the run when less (the front end drops its least
        recently used to stay within it). None without max_memory. Call it before batch_decoder(). Every plan counts
        the parked states' bytes whether or not this is called."""
        if count < 0:
            raise BadInput(f"kept conversations must be 0 or more, not {count}")
        if count == 0:
            return 0
        plan = self.pair.check_serving(n_seq, count)
        return plan.part("kept_conversations").total if plan is not None else None

    def __repr__(self) -> str:
        return f"<smolcli.Model {self.files.model.path.name}{' (loaded)' if self.loaded else ''}>"


# the settings' lines in help(smolcli.load) and help(Model.ask) come from their dataclasses: one list
load.__doc__ = load.__doc__.replace("{settings}", settings_help(LoadOptions).strip())
Model.ask.__doc__ = Model.ask.__doc__.replace(
    "{settings}", settings_help(GenerationSettings).replace("\n", "\n    ").strip()
)
