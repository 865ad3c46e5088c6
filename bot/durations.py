"""Durations as people write them, one grammar for the config file and for `!schedule`:
``90s``, ``10m``, ``1h30m``, ``1h 30m``, ``2 hours``, ``1w``; units in either case."""

from __future__ import annotations

import re
from datetime import timedelta

UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 7 * 86400),
}
_UNITS_SHOWN = (("d", "day", 86400), ("h", "hour", 3600), ("m", "minute", 60), ("s", "second", 1))

# ASCII digits only: int() would accept other scripts' digits and "²" would pass isdigit().
_NUMBER = re.compile(r"[0-9]{1,9}")
_LETTERS = re.compile(r"[a-z]+")


def _compact_parts(word: str) -> list[tuple[str, str]]:
    """`1h30m` -> [("1", "h"), ("30", "m")]; [] when the word is not only number-unit pairs."""
    parts, pos = [], 0
    while pos < len(word):
        number = _NUMBER.match(word, pos)
        unit = _LETTERS.match(word, number.end()) if number else None
        if unit is None:
            return []
        parts.append((number.group(), unit.group()))  # type: ignore[union-attr]
        pos = unit.end()
    return parts


def read_duration(words: list[str], i: int) -> tuple[int, int] | None:
    """Seconds and words used for a duration at words[i:]: `1h30m`, `1h 30m` or `2 hours`."""
    total, j = 0, i
    while j < len(words):
        word = words[j].lower()
        parts = _compact_parts(word)
        if parts and all(unit in UNIT_SECONDS for _, unit in parts):
            total += sum(int(number) * UNIT_SECONDS[unit] for number, unit in parts)
            j += 1
        elif (
            _NUMBER.fullmatch(word) and j + 1 < len(words) and words[j + 1].lower() in UNIT_SECONDS
        ):
            total += int(word) * UNIT_SECONDS[words[j + 1].lower()]
            j += 2
        else:
            break
    return (total, j - i) if j > i else None


def parse_duration(text: str) -> timedelta | None:
    """The whole of `text` as a duration, or None when it is not one."""
    words = text.split()
    parsed = read_duration(words, 0)
    if parsed is None or parsed[1] != len(words):
        return None
    return timedelta(seconds=parsed[0])


def duration_parts(duration: timedelta, *, days: bool = True) -> list[tuple[int, str, str]]:
    """(count, short, name) from the largest unit down: 90 minutes -> (1, h, hour), (30, m, minute).
    Without `days`, hours are the largest unit (24h stays 24h)."""
    left = int(duration.total_seconds())
    parts = []
    for short, name, seconds in _UNITS_SHOWN if days else _UNITS_SHOWN[1:]:
        count, left = divmod(left, seconds)
        if count:
            parts.append((count, short, name))
    return parts


def compact_duration(duration: timedelta, *, days: bool = True) -> str:
    """`1h30m`, the form `parse_duration` reads back; `0s` for nothing."""
    return "".join(f"{n}{short}" for n, short, _ in duration_parts(duration, days=days)) or "0s"
