"""Reasoning models think before they answer: inside `<think>…</think>` in the answer's text, or in
a separate `reasoning_content` field. The thinking is never the answer: it is split off here, in
one pass over the text, also while it streams in (a tag may arrive cut across two pieces).

The split runs in time linear in the text: `str.find` from a moving position, and at most a tag's
length kept back at the end of a piece, in case the tag continues in the next one."""

from __future__ import annotations

from collections.abc import Callable

OPEN = "<think>"
CLOSE = "</think>"
# A piece ending in one of these may be the start of a tag: held back until the next piece.
_OPEN_PREFIXES = tuple(OPEN[:k] for k in range(len(OPEN) - 1, 0, -1))
_CLOSE_PREFIXES = tuple(CLOSE[:k] for k in range(len(CLOSE) - 1, 0, -1))


def _partial_tag_at_end(text: str, prefixes: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that a tag could continue (0: none)."""
    for prefix in prefixes:  # longest first; at most seven short comparisons
        if text.endswith(prefix):
            return len(prefix)
    return 0


class ThinkSplitter:
    """Feeds on the answer's text piece by piece; keeps what is thought apart from what is said.

    - `<think>` opens thinking anywhere, `</think>` closes it; tags are exact (lowercase);
    - a `</think>` that closes nothing (templates that put the opening tag in the prompt) turns
      everything said before it into thinking;
    - an unclosed `<think>` thinks to the end: a stream cut off while thinking has no answer."""

    def __init__(self) -> None:
        self._said: list[str] = []
        self._thought: list[str] = []
        self._inside = False
        self._held = ""  # the end of the last piece, when it may be the start of a tag
        self.saw_thinking = False

    @property
    def thinking(self) -> bool:
        """Inside a `<think>` block right now."""
        return self._inside

    def feed(self, piece: str) -> None:
        text = self._held + piece
        self._held = ""
        pos = 0
        # Where the next tags are, searched again only once passed: each search starts after
        # the last, so the text is scanned a bounded number of times whatever its shape.
        opening = closing = -2  # -2: not searched yet; -1: none left
        while pos < len(text):
            if closing != -1 and closing < pos:
                closing = text.find(CLOSE, pos)
            if self._inside:
                if closing < 0:
                    keep = _partial_tag_at_end(text[-len(CLOSE) :], _CLOSE_PREFIXES)
                    keep = min(keep, len(text) - pos)
                    self._thought.append(text[pos : len(text) - keep])
                    self._held = text[len(text) - keep :]
                    return
                self._thought.append(text[pos:closing])
                self._inside = False
                pos = closing + len(CLOSE)
                continue
            if opening != -1 and opening < pos:
                opening = text.find(OPEN, pos)
            if opening < 0 and closing < 0:
                tail = text[-len(CLOSE) :]
                keep = max(
                    _partial_tag_at_end(tail, _OPEN_PREFIXES),
                    _partial_tag_at_end(tail, _CLOSE_PREFIXES),
                )
                keep = min(keep, len(text) - pos)
                self._said.append(text[pos : len(text) - keep])
                self._held = text[len(text) - keep :]
                return
            if closing >= 0 and (opening < 0 or closing < opening):
                # Closes a block whose opening was never sent: what was said was thought.
                self._thought.extend([*self._said, text[pos:closing]])
                self._said.clear()
                self.saw_thinking = True
                pos = closing + len(CLOSE)
                continue
            self._said.append(text[pos:opening])
            self._inside = self.saw_thinking = True
            pos = opening + len(OPEN)

    def finish(self) -> None:
        """The text is complete: a held-back end was not a tag after all."""
        held, self._held = self._held, ""
        (self._thought if self._inside else self._said).append(held)

    @property
    def answer(self) -> str:
        """What is said so far, without leading blank space (models put a line after `</think>`)."""
        return "".join(self._said).lstrip()

    @property
    def reasoning(self) -> str:
        return "".join(self._thought).strip()


def split_thinking(text: str) -> tuple[str, str]:
    """A whole text as (answer, reasoning)."""
    splitter = ThinkSplitter()
    splitter.feed(text)
    splitter.finish()
    return splitter.answer.rstrip(), splitter.reasoning


class AnswerStream:
    """Between the model and the member: the model reports its raw text so far (and a provider's
    separate reasoning so far); the member is shown the answer so far, and told while the model
    only thinks. Each callback receives text growing at its end, so only the new end is parsed."""

    def __init__(
        self,
        on_answer: Callable[[str], None] | None,
        on_thinking: Callable[[str], None] | None = None,
    ) -> None:
        self._on_answer = on_answer
        self._on_thinking = on_thinking
        self._splitter = ThinkSplitter()
        self._raw_seen = 0
        self._provider_reasoning = ""
        self._shown = ""

    def raw_text(self, so_far: str) -> None:
        if len(so_far) < self._raw_seen:  # not a continuation: start over (never expected)
            self._splitter, self._raw_seen = ThinkSplitter(), 0
        self._splitter.feed(so_far[self._raw_seen :])
        self._raw_seen = len(so_far)
        self._report()

    def provider_reasoning(self, so_far: str) -> None:
        self._provider_reasoning = so_far
        self._report()

    def _report(self) -> None:
        answer = self._splitter.answer
        if answer and not self._splitter.thinking:
            if answer != self._shown and self._on_answer is not None:
                self._shown = answer
                self._on_answer(answer)
        elif not self._shown and self._on_thinking is not None:
            self._on_thinking(self.reasoning)

    @property
    def reasoning(self) -> str:
        inline = self._splitter.reasoning
        provided = self._provider_reasoning.strip()
        return "\n\n".join(r for r in (provided, inline) if r)
