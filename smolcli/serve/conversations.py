"""The last few conversations as library Chats, each parked and found by the history it holds.

OpenAI clients send the whole conversation with every request. When a request's history (its
messages before the last) is what one of these Chats holds, the request continues that Chat:
its KV cache has every earlier token, so only the new message is evaluated. Kept Chats are parked
(Chat.park()): the context freed, the cache held as a saved state whose bytes grow with the tokens
it holds, restored by the Chat's next turn. The last one put back stays as it is until another
request starts (park_idle): one person's follow-up, the common case, then needs no new context
(making one is most of a restore's cost: 0.1 s of CPU on 256M, 0.45 s on 2.2B), and the process
never holds it beside another request's context.
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
    """At most `capacity` Chats, parked but for the last one put back, whose states hold at most `budget` bytes
    (None: no byte limit; with --max-memory, Model.keep_conversations' budget), least recently used first out; a
    Chat taken out is the taker's until it is put back."""

    def __init__(self, capacity: int, budget: int | None = None):
        self.capacity = capacity
        self.budget = budget
        self._chats: OrderedDict[str, Chat] = OrderedDict()

    def take(self, key: str) -> Chat | None:
        return self._chats.pop(key, None)

    def park_idle(self) -> None:
        """Park the kept Chat left unparked (the last one put back): a request is about to make a context."""
        for chat in self._chats.values():
            if not chat.parked:
                chat.park()

    def put(self, key: str, chat: Chat) -> None:
        """Keep the Chat, as it is until the next request starts, dropping the least recently used to stay within
        capacity and budget first (its state's size counted, so the parked states never pass the budget, not even
        while this one is copied out); one larger than the whole budget is closed, not kept."""
        old = self._chats.pop(key, None)
        if old is not None and old is not chat:
            old.close()
        if self.capacity <= 0:
            chat.close()
            return
        size = chat.state_bytes
        if self.budget is not None and size > self.budget:
            chat.close()
            return
        while self._chats and (
            len(self._chats) >= self.capacity or (self.budget is not None and self.held_bytes + size > self.budget)
        ):
            _, oldest = self._chats.popitem(last=False)
            oldest.close()  # frees its saved state
        self.park_idle()  # one left unparked by a request that ran beside this one (--parallel)
        self._chats[key] = chat

    @property
    def parked_bytes(self) -> int:
        return sum(chat.parked_bytes for chat in self._chats.values())

    @property
    def held_bytes(self) -> int:
        """The kept Chats' states, parked or (the last one put back) as parking it would make it."""
        return sum(chat.state_bytes for chat in self._chats.values())

    def __len__(self) -> int:
        return len(self._chats)

    def close(self) -> None:
        while self._chats:
            self._chats.popitem()[1].close()
