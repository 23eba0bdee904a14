"""Text for people: sizes, ages, durations and numbers. No Textual, no torch."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from adapters.sizes import human_size as human_size  # with the rest of the TUI's text helpers
from adapters_store import epoch_seconds


def age(value: str | float | None, now: float) -> str:
    """How long ago, coarsely: "just now", "5 min ago", "3 h ago", "2 d ago", else the date."""
    then = epoch_seconds(value)
    if then is None:
        return ""
    seconds = now - then
    if seconds < 0:
        return "just now"
    if seconds < 60:
        return "just now" if seconds < 5 else f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 86400 * 30:
        return f"{int(seconds // 86400)} d ago"
    return datetime.fromtimestamp(then, UTC).strftime("%Y-%m-%d")


def timestamp(value: str | float | None) -> str:
    """An absolute UTC time to the second, e.g. "2024-05-01 12:30:00"."""
    then = epoch_seconds(value)
    if then is None:
        return ""
    return datetime.fromtimestamp(then, UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


