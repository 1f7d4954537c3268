"""The user's words and images as the model's prompt text: image placement and chat turns."""

from __future__ import annotations

from smolcli.errors import BadInput
from smolcli.models.smolvlm import END_OF_UTTERANCE, IMAGE_MARKER, render_prompt


def check_text(text: str, what: str = "the prompt") -> str:
    """Text llama.cpp can take: UTF-8 all through. A byte that is not UTF-8 reaches Python as a lone surrogate
    (the command line and stdin decode that way); refused here, by position, instead of failing deep inside."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise BadInput(
            f"{what} holds a byte that is not UTF-8 (at character {error.start + 1}); give the text in UTF-8"
        ) from None
    return text


def place_images(text: str, n_images: int) -> str:
    """Images go before the text, unless `<image>` markers say where each one stands."""
    check_text(text)
    markers = text.count(IMAGE_MARKER)
    if markers == 0:
        return IMAGE_MARKER * n_images + text
    if markers != n_images:
        raise BadInput(
            f"the prompt has {markers} {IMAGE_MARKER} markers but {n_images} images were given; "
            f"give one image per marker, or no markers to put the images before the text"
        )
    return text


def first_turn(text: str, system: str | None = None) -> str:
    if system is not None:
        check_text(system, "the system prompt")
    return render_prompt([("user", text)], system)


def next_turn(text: str) -> str:
    """A later user turn, appended to a cache that ends with the previous answer's tokens.

    The answer's end-of-utterance token is sampled but never evaluated, so the turn
    closes it first; the rest is the user turn exactly as render_prompt writes it.
    """
    rendered = render_prompt([("user", text)])
    return f"{END_OF_UTTERANCE}\n{rendered[rendered.index('User') :]}"
