"""Progress lines: what the library's long steps (a pull, a clip's frames, a benchmark) hand their messages to."""

from __future__ import annotations

from typing import Callable

Report = Callable[[str], None]


def quiet(_message: str) -> None:
    """The default report: nothing shown."""
