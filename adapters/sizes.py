"""Byte counts for people, as the CLI and the TUI both show them (``12.3 KB``)."""

from __future__ import annotations


def human_size(n: int | float | None) -> str:
    """Powers of 1024, one decimal above bytes; "" for an unknown size."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
