"""Text for people: sizes, ages, durations and numbers. No Textual, no torch."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


def human_size(n: int | float | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def parse_time(value: str | float | int | None) -> float | None:
    """Epoch seconds from an ISO 8601 string (the store's ``created``) or a number."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def age(value: str | float | None, now: float) -> str:
    """How long ago, coarsely: "just now", "5 min ago", "3 h ago", "2 d ago", else the date."""
    then = parse_time(value)
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
    then = parse_time(value)
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


