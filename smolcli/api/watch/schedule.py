"""When a watch asks: every so many seconds of the source's time, and/or when the picture changed enough."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np

from smolcli.api.watch.change import changed_fraction, thumbnail
from smolcli.api.watch.mailbox import Frame
from smolcli.errors import BadInput

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


class Schedule:
    """Due: the first frame; then, with `every`, a frame at least that many seconds after the last one asked
    about, and with `on_change`, one that differs from it by more than that fraction. Neither: every frame."""

    def __init__(self, every: float | None = None, on_change: float | None = None):
        if every is not None and not every > 0:
            raise BadInput(f"{{every}} must be a positive number of seconds, not {every:g}")
        if on_change is not None and not 0 <= on_change < 1:
            raise BadInput(
                f"{{on_change}} must be a fraction of the picture from 0 to 1 (0.1: a tenth changed), not {on_change:g}"
            )
        self.every = every
        self.on_change = on_change
        self._last_time: float | None = None
        self._last_thumbnail: np.ndarray | None = None

    def due(self, frame: Frame) -> bool:
        if self._last_time is None:
            return True
        if self.every is not None and frame.time_s - self._last_time < self.every - 1e-6:
            return False
        if self.on_change is not None:
            return changed_fraction(self._last_thumbnail, thumbnail(frame.pixels)) > self.on_change
        return True

    def asked(self, frame: Frame) -> None:
        self._last_time = frame.time_s
        if self.on_change is not None:
            self._last_thumbnail = thumbnail(frame.pixels)


def until_deadline(until: str | dt.datetime | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """When to stop: a datetime, a duration from now ('90s', '10m', '2h'), a time of day ('18:30', its next
    occurrence) or an ISO 8601 date and time ('2026-12-24T18:00', local time unless it has an offset)."""
    if until is None:
        return None
    now = now or dt.datetime.now().astimezone()
    if isinstance(until, dt.datetime):
        return until if until.tzinfo else until.astimezone()
    text = until.strip()
    duration = _DURATION.match(text)
    if duration:
        return now + dt.timedelta(seconds=float(duration.group(1)) * _SECONDS[duration.group(2)])
    try:
        clock = dt.time.fromisoformat(text)
    except ValueError:
        pass
    else:
        moment = dt.datetime.combine(now.date(), clock, clock.tzinfo or now.tzinfo)
        return moment if moment > now else moment + dt.timedelta(days=1)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"{{until={until}}} is not a time: give a duration (90s, 10m, 2h), a time of day (18:30) or a date "
            "and time (2026-12-24T18:00)"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()
