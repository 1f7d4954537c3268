"""One SmolVLM pair as an `llm` model: prompts become `Model.ask`, conversations one library `Chat`.

The loaded smolcli.Model is kept for the process (one at a time: a second pair or other load
options close the first), so `llm chat` loads the weights once. Each llm conversation keeps one
library Chat: a follow-up evaluates only its own tokens and never re-encodes an earlier image.
"""

from __future__ import annotations

from typing import Iterator, Optional

import llm
from pydantic import Field

import smolcli
from smolcli.errors import SmolcliError
from smolcli.plugins.llm_pairs import LlmPair

# what PIL opens and llm recognises by content or file name
IMAGE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff", "image/x-ms-bmp"}
)
# llm conversations whose Chat stays open in one process; older ones are closed (their context freed)
MAX_OPEN_CHATS = 4
GENERATION = ("max_tokens", "temperature", "top_p", "top_k", "seed", "ignore_eos")
LOADING = ("max_tiles", "image_size", "ctx", "threads", "n_gpu_layers", "cache_type")


def llm_spelling(setting: str, value: str | None) -> str:
    """Settings named in a smolcli error, as llm's options: `raise -o ctx N`."""
    return f"-o {setting} {value}" if value is not None else f"-o {setting}"


class _Loaded:
    """The one smolcli.Model this process holds, and the open Chat of each llm conversation."""

    def __init__(self):
        self.key: tuple | None = None
        self.model: smolcli.Model | None = None
        self.chats: dict[str, tuple[smolcli.Chat, int]] = {}  # conversation id -> (Chat, answered turns)

    def get(self, pair: LlmPair, load: dict) -> smolcli.Model:
        key = (pair.model, pair.mmproj, tuple(sorted(load.items())))
        if self.key != key:
            self.close()
            self.model = smolcli.load(pair.model, mmproj=pair.mmproj, **load)
            self.key = key
        return self.model

    def close(self) -> None:
        self.chats.clear()
        if self.model is not None:
            self.model.close()  # closes its chats too
        self.model, self.key = None, None

    def remember(self, conversation_id: str, chat: smolcli.Chat, turns: int) -> None:
        self.chats.pop(conversation_id, None)
        self.chats[conversation_id] = (chat, turns)
        while len(self.chats) > MAX_OPEN_CHATS:
            oldest = next(iter(self.chats))
            self.chats.pop(oldest)[0].close()


LOADED = _Loaded()


class SmolVLM(llm.Model):
    can_stream = True
    attachment_types = IMAGE_TYPES
    supports_schema = True

    class Options(llm.Options):
        max_tokens: Optional[int] = Field(None, description="Most tokens to generate (default 256)", ge=1)
        temperature: Optional[float] = Field(None, description="Sampling temperature; greedy (0) by default", ge=0)
        top_p: Optional[float] = Field(None, description="Nucleus sampling threshold (default 0.95)", gt=0, le=1)
        top_k: Optional[int] = Field(None, description="Sample among the k likeliest tokens (default 40)", ge=0)
        seed: Optional[int] = Field(None, description="Random seed for sampling")
        ignore_eos: Optional[bool] = Field(None, description="Generate max_tokens even past the end of the answer")
        max_tiles: Optional[int] = Field(None, description="Resize each image to at most this many tiles", ge=1)
        image_size: Optional[int] = Field(None, description="Longest image side in pixels before tiling", ge=1)
        ctx: Optional[int] = Field(None, description="Context size in tokens (default: what the prompt needs)", ge=1)
        threads: Optional[int] = Field(None, description="CPU threads", ge=1)
        n_gpu_layers: Optional[int] = Field(None, description="Layers on the GPU (default: all when built with one)")
        cache_type: Optional[str] = Field(None, description="KV-cache type: f16, q8_0 or q4_0")

    def __init__(self, pair: LlmPair):
        self.pair = pair
        self.model_id = pair.model_id

    def __str__(self) -> str:
        return f"SmolVLM: {self.model_id}"

    def execute(self, prompt, stream, response, conversation) -> Iterator[str]:
        try:
            yield from self._answer(prompt, response, conversation)
        except SmolcliError as error:
            # llm prints a ValueError as one line ("Error: ..."), without a traceback
            raise ValueError(error.text(llm_spelling)) from None

    def _answer(self, prompt, response, conversation) -> Iterator[str]:
        options = prompt.options
        load = {name: getattr(options, name) for name in LOADING if getattr(options, name) is not None}
        generation = {name: getattr(options, name) for name in GENERATION if getattr(options, name) is not None}
        images = [_image(attachment) for attachment in prompt.attachments]
        schema = {"json_schema": prompt.schema} if prompt.schema else {}
        model = LOADED.get(self.pair, load)
        if conversation is None:
            answering = model.ask(
                prompt.prompt or "", images, system=prompt.system or None, stream=True, **generation, **schema
            )
        else:
            chat, turns = self._chat_for(model, conversation, prompt.system, generation)
            answering = chat.send(prompt.prompt or "", images, stream=True, **schema)
            LOADED.remember(conversation.id, chat, turns + 1)
        yield from answering
        answer = answering.answer
        usage = answer.usage
        response.set_usage(
            input=usage.prompt_tokens,
            output=usage.completion_tokens,
            details={
                "image_tokens": usage.image_tokens,
                "images_encoded": usage.images_encoded,
                "image_cache_hits": usage.image_cache_hits,
            },
        )
        response.response_json = {k: v for k, v in answer.as_dict().items() if k != "text"}

    def _chat_for(self, model: smolcli.Model, conversation, system: str | None, generation: dict):
        """This conversation's Chat: the open one when it has seen every earlier turn, else a new one."""
        earlier = len(conversation.responses)
        if conversation.id in LOADED.chats:
            chat, turns = LOADED.chats[conversation.id]
            if turns == earlier and chat.model is model:
                return chat, turns
        if earlier or conversation.loaded_messages:
            # `llm -c` in a new process: the earlier turns' KV cache is gone, and replaying them
            # would regenerate answers the log already holds
            raise SmolcliError(
                "smolvlm: continuing a logged conversation in a new process is not supported; "
                "keep it in one `llm chat`, or start a new conversation"
            )
        return model.chat(system=system or None, **generation), 0


def _image(attachment) -> str | bytes:
    """A path as given (its name shows in errors), else the bytes (piped, or fetched from a URL)."""
    return attachment.path if attachment.path else attachment.content_bytes()
