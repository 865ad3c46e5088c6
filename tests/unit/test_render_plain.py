"""Plain replies (`!ping`'s) skip markdown-it: the fast path must give exactly what markdown-it
gives for every text it accepts, and accept nothing markdown would change."""

from __future__ import annotations

import string
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.matrix.render import is_plain, markdown_to_html, rendered

# Letters, digits, the ASCII punctuation markdown cares about and the one it does not, spaces and
# tabs, line breaks, and Unicode that has tripped renderers: non-breaking and other spaces, line
# and paragraph separators, bidi controls, NUL, accents, emoji.
ALPHABET = (
    string.ascii_letters + string.digits + string.punctuation + " \t\n\r"
    + "\u00a0\u2028\u2029\u202e\u2066\u2069\u200b\x00\x7féßÆ日本😀"
)  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_whatever_the_fast_path_accepts_renders_as_markdown_it_renders_it(text):
    if is_plain(text):
        assert markdown_to_html(text) == rendered(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=string.ascii_letters + " .,!?'\"()-:;=%$@/0123456789", max_size=60))
def test_ordinary_sentences_that_start_with_a_letter_take_the_fast_path_correctly(text):
    if is_plain(text):
        assert markdown_to_html(text) == rendered(text)


def test_what_takes_the_fast_path_and_what_does_not():
    assert is_plain("Pong! Your message reached me in 12 ms.")
    assert is_plain('She said "hi" (twice) - 3 = 2; 50% off: see example.org/x?y=1')
    for markdown in (
        "", "1. item", "- item", "+ item", "# title", "> quote", "    code", " lead", "trail ",
        "a\nb", "a *b*", "a _b_", "a `b`", "a [b](c)", "a <b>", "a &amp;", "a \\* b", "a ~~b~~",
        "a | b", "2 apples", "***",
    ):  # fmt: skip
        assert not is_plain(markdown), markdown
    assert not is_plain("a" * 2001)


def test_the_check_is_linear_on_hostile_text():
    hostile = "a" + "!" * 65_535
    started = time.perf_counter()
    assert not is_plain(hostile)  # too long for the fast path, decided at once
    assert is_plain("a" + "!" * 1999)
    assert time.perf_counter() - started < 0.05
