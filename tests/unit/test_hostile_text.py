"""Every parser and renderer of member text against hostile input: linear time (a 64 KiB message
of the worst shapes is handled within a CPU-time bound per call), and properties that hold for
any text (hypothesis). The bound is thread CPU time, so a busy machine does not fail the test,
while the quadratic behaviour it guards against would exceed it many times over."""

from __future__ import annotations

import importlib
import pkgutil
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bot
import web_callback
from bot.commands.catalog import all_commands
from bot.commands.registry import UsageError, _tokenize, parse_arguments
from bot.community.markdown import code_span, escape_markdown, isolate, quoted
from bot.community.schedules import ScheduleError, parse_when
from bot.matrix.message_size import MAX_PART_CHARS, event_bytes, fits, message_parts
from bot.matrix.render import markdown_to_plain
from bot.matrix.triggers import find_trigger, pills, resolve_pills

EVENT_LIMIT = 64 * 1024
LOOP_BUDGET_S = 0.1  # what one event may cost the event loop
WORKER_BUDGET_S = 0.5  # what one call in the worker thread may cost (parsing a long command)

PILL = '<a href="https://matrix.to/#/@mallory:example.org">'


def hostile(pattern: str, limit: int = EVENT_LIMIT - 100) -> str:
    return pattern * (limit // len(pattern))


HOSTILE = {
    "brackets": hostile("["),
    "images": hostile("!["),
    "emphasis": hostile("*_"),
    "angles": hostile("<"),
    "backticks": hostile("`"),
    "backslashes": hostile("\\"),
    "mention tails": hostile("[](https://matrix.to/#/"),
    "unclosed pill": PILL + hostile("a", EVENT_LIMIT - 200),
    "many pills": hostile(PILL + "x</a>"),
    "open anchors": hostile("<a<a "),
    "quotes": hostile('"a '),
    "escaped quotes": hostile('"\\'),
    "options": hostile("--all "),
    "durations": hostile("1h"),
    "offsets": hostile("+01:00"),
    "bidi": hostile("\u202eabc"),
    "emoji": hostile("😀"),
    "nul": hostile("\x00a"),
    "words": hostile("a "),
}


def cpu_seconds(work: Callable[[], Any]) -> float:
    started = time.thread_time()
    try:
        work()
    except (UsageError, ScheduleError, ValueError):
        pass  # refusing the input is fine; taking long to do so is not
    return time.thread_time() - started


@pytest.mark.parametrize("name", HOSTILE)
def test_parsers_of_member_text_are_linear(name):
    text = HOSTILE[name]
    content = {"body": "!kick " + text, "formatted_body": "!kick " + text}
    checks: dict[str, Callable[[], Any]] = {
        "markdown_to_plain": lambda: markdown_to_plain(text),
        "pills": lambda: pills(text),
        "resolve_pills": lambda: resolve_pills("!kick " + text, content),
        "find_trigger": lambda: find_trigger(
            content, prefix="!", bot_user_id="@bot:example.org", bot_display_name="Bot"
        ),
        "escape_markdown": lambda: escape_markdown(text),
        "code_span": lambda: code_span(text),
        "quoted": lambda: quoted(text),
        "isolate": lambda: isolate(text),
        "parse_when": lambda: parse_when(text.split(), datetime.now(UTC), UTC),
    }
    slow = {
        check: round(s, 3)
        for check, work in checks.items()
        if (s := cpu_seconds(work)) > LOOP_BUDGET_S
    }
    assert not slow, f"{name}: over {LOOP_BUDGET_S} s of CPU: {slow}"


@pytest.mark.parametrize("name", HOSTILE)
def test_every_command_parses_hostile_arguments_in_bounded_time(name):
    text = HOSTILE[name]
    slow = {}
    for command in all_commands().commands.values():
        seconds = cpu_seconds(lambda command=command: parse_arguments(command, text))
        if seconds > WORKER_BUDGET_S:
            slow[command.name] = round(seconds, 3)
    assert not slow, f"{name}: over {WORKER_BUDGET_S} s of CPU: {slow}"


@pytest.mark.parametrize("name", ["brackets", "images", "emphasis", "angles", "mention tails",
                                  "words", "emoji", "backticks"])  # fmt: skip
def test_long_replies_are_cut_into_parts_that_fit_and_render_in_bounded_time(name):
    text = HOSTILE[name]
    started = time.thread_time()
    parts = message_parts(text, as_edit=True)
    elapsed = time.thread_time() - started
    assert len(parts) >= 2
    for part in parts:
        assert fits(part), event_bytes(part)
        assert len(part["body"]) <= MAX_PART_CHARS + 10
    # Rendering runs in the worker thread; per part it stays well under a second.
    assert elapsed / len(parts) < 2 * WORKER_BUDGET_S, (elapsed, len(parts))


def test_a_code_block_cut_in_two_is_closed_and_reopened():
    text = "```python\n" + "x = 1\n" * 4000 + "```\nafter"
    parts = message_parts(text)
    assert len(parts) > 1
    for part in parts[:-1]:
        assert part["body"].startswith("```python\n") and part["body"].endswith("\n```")
        assert '<pre><code class="language-python">' in part["formatted_body"]


# -- properties for any text ---------------------------------------------------------------------

PIECES = [*'ab @:!#[]()<>/"\\*_`~\n\t\u202e\u2067😀\x00',
          "https://matrix.to/#/", '<a href="', "</a>", "--all", "1h"]  # fmt: skip
member_text = st.lists(st.sampled_from(PIECES), max_size=120).map("".join)


@settings(max_examples=300, deadline=None)
@given(member_text)
def test_tokens_are_ordered_spans_of_the_text(text):
    end = 0
    for token in _tokenize(text):
        assert end <= token.start < token.end <= len(text)
        end = token.end


@settings(max_examples=300, deadline=None)
@given(member_text)
def test_plain_text_never_grows_and_pills_come_from_links(text):
    assert len(markdown_to_plain(text)) <= len(text)
    for mxid, label in pills(text):
        assert mxid.startswith("@") and len(label) <= 512


@settings(max_examples=200, deadline=None)
@given(member_text.map(lambda t: t * 40))
def test_parts_keep_every_word_and_each_fits(text):
    parts = message_parts(text)
    assert all(fits(p) for p in parts)
    if "```" not in text and "~~~" not in text:
        assert "".join(p["body"] for p in parts).split() == markdown_to_plain(text).split()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_names_cannot_reverse_what_follows(name):
    shown = escape_markdown(name)
    controls = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u200e", "\u200f", "\u061c"}
    # A direction control is only ever inside an isolate we opened first and close last: the
    # closing isolate ends whatever embedding or override it began.
    if controls & set(shown):
        assert shown.startswith("\u2068") and shown.endswith("\u2069")
    inner = shown[1:-1] if shown.startswith("\u2068") else shown
    assert not {"\u2066", "\u2067", "\u2068", "\u2069"} & set(inner)


def test_quoted_input_is_short_and_inert():
    echoed = quoted("**" + "x" * 10_000 + "**")
    assert len(echoed) < 200 and "\\*\\*" in echoed


# -- no backtracking regular expression anywhere ---------------------------------------------


def _patterns() -> list[tuple[str, re.Pattern[str]]]:
    found = []
    for package in (bot, web_callback):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if module.name.endswith("__main__"):
                continue
            loaded = importlib.import_module(module.name)
            for name, value in vars(loaded).items():
                if isinstance(value, re.Pattern):
                    found.append((f"{module.name}.{name}", value))
    return found


def _nested_unbounded(tree, inside_repeat: bool = False) -> bool:  # type: ignore[no-untyped-def]
    from re import _constants as c  # type: ignore[attr-defined]

    repeats = (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None))
    for op, arg in tree:
        if op in repeats:
            _low, high, body = arg
            unbounded = high == c.MAXREPEAT
            if unbounded and inside_repeat:
                return True
            if _nested_unbounded(body, inside_repeat or unbounded or high > 1):
                return True
        elif op is c.SUBPATTERN:
            if _nested_unbounded(arg[-1], inside_repeat):
                return True
        elif op is c.BRANCH:
            if any(_nested_unbounded(branch, inside_repeat) for branch in arg[1]):
                return True
    return False


def test_no_regular_expression_has_nested_quantifiers():
    from re import _parser  # type: ignore[attr-defined]

    patterns = _patterns()
    assert len(patterns) > 10  # the audit found the project's patterns
    nested = [name for name, p in patterns if _nested_unbounded(_parser.parse(p.pattern, p.flags))]
    assert nested == []
