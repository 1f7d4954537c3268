"""Answers on stdout, each piece flushed as it comes, so pipes and terminals see them live."""

from __future__ import annotations

import sys


def write_answer(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
