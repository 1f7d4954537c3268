"""Numbers for people: byte sizes and large counts."""

from __future__ import annotations


def size_text(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "unknown"
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def count_text(n: int) -> str:
    """123200 -> '123.2K', 2246272880 -> '2.25B'."""
    for threshold, suffix, digits in ((10**9, "B", 2), (10**6, "M", 1), (10**3, "K", 1)):
        if n >= threshold:
            return f"{n / threshold:.{digits}f}{suffix}"
    return str(n)
