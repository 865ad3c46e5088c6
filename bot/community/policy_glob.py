"""Globs of policy rules (`*` any run of characters, `?` exactly one), matched without
backtracking: the pattern is cut at its stars into segments; the first must match at the start,
the last at the end, and each one between is taken at its leftmost place after the one before
(leftmost is always right for star-separated segments, so nothing is ever tried twice). A segment
is found by a bit-parallel Shift-And scan, so the text is read once, left to right, whatever
the pattern: time O(len(text) x ceil(len(segment)/64)), no worse for hostile input."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_GLOB_LENGTH = 1024  # longer entities are not rules anyone means; they are refused, not matched


def _fits_at(segment: str, text: str, at: int) -> bool:
    """`segment` (with `?`) matches text[at:at+len(segment)]."""
    if at < 0 or at + len(segment) > len(text):
        return False
    for offset, char in enumerate(segment):
        if char != "?" and text[at + offset] != char:
            return False
    return True


@dataclass(frozen=True)
class _Segment:
    text: str
    masks: dict[str, int] = field(default_factory=dict)  # char -> bits where it may stand
    wild: int = 0  # bits of the `?` positions

    @classmethod
    def of(cls, text: str) -> _Segment:
        masks: dict[str, int] = {}
        wild = 0
        for bit, char in enumerate(text):
            if char == "?":
                wild |= 1 << bit
            else:
                masks[char] = masks.get(char, 0) | 1 << bit
        return cls(text, {c: m | wild for c, m in masks.items()}, wild)

    def find(self, text: str, start: int, end: int) -> int:
        """Where the segment's leftmost occurrence ending at or before `end` ends, or -1."""
        if "?" not in self.text:
            at = text.find(self.text, start, end)
            return -1 if at < 0 else at + len(self.text)
        accepted = 1 << (len(self.text) - 1)
        state = 0
        masks, wild = self.masks, self.wild
        for index in range(start, end):
            state = ((state << 1) | 1) & masks.get(text[index], wild)
            if state & accepted:
                return index + 1
        return -1


@dataclass(frozen=True)
class Glob:
    pattern: str
    case_sensitive: bool = True
    _first: str = ""
    _last: str = ""
    _middle: tuple[_Segment, ...] = ()
    _starred: bool = False
    _fixed: int = 0  # characters the pattern needs at least

    @classmethod
    def compile(cls, pattern: str, *, case_sensitive: bool = True) -> Glob:
        if len(pattern) > MAX_GLOB_LENGTH:
            raise ValueError(f"a glob of {len(pattern)} characters is longer than allowed")
        folded = pattern if case_sensitive else pattern.lower()
        parts = folded.split("*")
        starred = len(parts) > 1
        middle = tuple(_Segment.of(p) for p in parts[1:-1] if p)
        return cls(
            pattern, case_sensitive, parts[0], parts[-1] if starred else "", middle, starred,
            sum(len(p) for p in parts),
        )  # fmt: skip

    @property
    def is_literal(self) -> bool:
        return not self._starred and "?" not in self.pattern

    def matches(self, text: str) -> bool:
        if not self.case_sensitive:
            text = text.lower()
        if not self._starred:
            return len(text) == len(self._first) and _fits_at(self._first, text, 0)
        if len(text) < self._fixed:
            return False
        if not _fits_at(self._first, text, 0):
            return False
        end = len(text) - len(self._last)
        if not _fits_at(self._last, text, end):
            return False
        position = len(self._first)
        for segment in self._middle:
            position = segment.find(text, position, end)
            if position < 0:
                return False
        return True
