"""The last few conversations as library Chats, each found by the history it holds.

OpenAI clients send the whole conversation with every request. When a request's history (its
messages before the last) is what one of these Chats holds, the request continues that Chat:
its KV cache already has every earlier token, so only the new message is evaluated.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

from smolcli.api.chat import Chat
from smolcli.serve.chat_request import Turn


def history_key(system: str | None, turns: list[Turn]) -> str:
    """A digest of the system prompt and the turns' words and image pixels."""
    identity = [system, [turn.identity() for turn in turns]]
    return hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode()).hexdigest()


class Conversations:
    """Least recently used first out; a Chat taken out is the taker's until it is put back."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._chats: OrderedDict[str, Chat] = OrderedDict()

    def take(self, key: str) -> Chat | None:
        return self._chats.pop(key, None)

    def put(self, key: str, chat: Chat) -> None:
        old = self._chats.pop(key, None)
        if old is not None and old is not chat:
            old.close()
        self._chats[key] = chat
        while len(self._chats) > self.capacity:
            _, oldest = self._chats.popitem(last=False)
            oldest.close()  # frees its llama.cpp context

    def __len__(self) -> int:
        return len(self._chats)

    def close(self) -> None:
        while self._chats:
            self._chats.popitem()[1].close()
