"""How many tokens of KV cache to ask llama.cpp for, and whether a prompt fits in it."""

from __future__ import annotations

from smolcli.errors import ContextFull

# llama.cpp pads contexts to this multiple anyway; sizing to it wastes nothing.
GRANULE = 256
# A conversation grows, so chat starts with room for several turns.
CHAT_MINIMUM = 4096


def _round_up(n_tokens: int) -> int:
    return max(GRANULE, -(-n_tokens // GRANULE) * GRANULE)


def _cap(n_ctx: int, n_ctx_train: int) -> int:
    return min(n_ctx, n_ctx_train) if n_ctx_train > 0 else n_ctx


def ask_context_size(prompt_tokens: int, max_tokens: int, n_ctx_train: int) -> int:
    """Room for the prompt (text and image tokens) and the whole answer, no more."""
    return _cap(_round_up(prompt_tokens + max_tokens), n_ctx_train)


def chat_context_size(first_turn_tokens: int, max_tokens: int, n_ctx_train: int) -> int:
    return _cap(max(CHAT_MINIMUM, _round_up(first_turn_tokens + max_tokens)), n_ctx_train)


def check_prompt_fits(prompt_tokens: int, image_tokens: int, n_ctx: int, fix: str) -> None:
    """Before anything is evaluated: the prompt plus at least one answer token must fit."""
    if prompt_tokens + 1 > n_ctx:
        raise ContextFull(
            f"the prompt needs {prompt_tokens} tokens ({image_tokens} of them for images) "
            f"but the context holds {n_ctx}; {fix}",
            n_past=0,
            n_new=prompt_tokens,
            n_ctx=n_ctx,
        )
