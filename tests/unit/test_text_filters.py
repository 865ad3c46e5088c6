"""The protections read members' text in linear time: words (Aho-Corasick), link hosts, domain
lookups, glob patterns and mentions, over 64 KiB hostile messages built to make backtracking
matchers (or quadratic scans) blow up. Each must finish fast, and four times the text must cost
about four times the time, not sixteen."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bot.community.text_filters import (
    DomainMatcher,
    Filters,
    GlobMatcher,
    WordMatcher,
    link_hosts,
    pill_mentions,
    plain_mentions,
)
from bot.matrix.protection_stage import _observe

KIB64 = 64 * 1024


def test_words_match_whole_words_case_insensitively():
    words = WordMatcher(["spam", "buy now", "ab", "abc"])
    assert words.find("SPAM!") == "spam"
    assert words.find("spammer antispam") is None
    assert words.find("please Buy Now") == "buy now"
    assert words.find("xabc abcd ab") == "ab"
    assert WordMatcher([]).find("anything") is None


def test_link_hosts_in_text_and_html():
    body = "see https://A.Example.org/x?y, www.b.org. and c.net/path mail me@d.org, @u:e.org 1.5"
    assert link_hosts(body) == ["a.example.org", "www.b.org", "c.net"]
    html = '<a href="https://evil.org/x">click</a> <a href=\'http://x.io\'>y</a> <a href="https://matrix.to/#/@a:b">a</a>'
    assert link_hosts("click", html) == ["evil.org", "x.io"]
    assert DomainMatcher(["evil.org"]).find(["a.b.evil.org"]) == "evil.org"
    assert DomainMatcher(["*.evil.org"]).find(["evil.org"]) == "evil.org"


def test_globs():
    globs = GlobMatcher(["free*nitro*now", "b?t.ly/??"])
    assert globs.find("FREE discord NITRO, claim now") == "free*nitro*now"
    assert globs.find("now nitro free") is None
    assert globs.find("go bit.ly/xy") == "b?t.ly/??"
    assert globs.find("go bit.ly/x") is None


def test_mentions():
    assert plain_mentions("hi @a:x.org, @b:y and @c @:z") == {"@a:x.org", "@b:y"}
    html = '<a href="https://matrix.to/#/@a%3Ax.org">A</a> <a href="https://matrix.to/#/@b:y?via=x">B</a>'
    assert pill_mentions(html) == {"@a:x.org", "@b:y"}


def _timed(work: Callable[[str], object], text: str) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        work(text)
        best = min(best, time.perf_counter() - started)
    return best


HOSTILE = {
    # Near-misses of every listed word at every position.
    "words": (lambda t: WordMatcher(["a" * 50 + "b", "aa" * 20 + "c", "a a a a b"]).find(t), "a"),
    "words-spaced": (lambda t: WordMatcher(["a a a a b"]).find(t), "a "),
    # Stars that a backtracking matcher retries at every split.
    "globs": (lambda t: GlobMatcher(["a*a*a*a*a*a*b", "?a?a?a?b", "a" * 99 + "?b"]).find(t), "a"),
    "hosts": (link_hosts, "a."),
    "hosts-scheme": (link_hosts, "http://"),
    "hosts-html": (lambda t: link_hosts("x", t), 'href="'),
    "domains": (lambda t: Filters.build([], ["evil.org"], []).find("", link_hosts(t)), "a.b."),
    "pills": (pill_mentions, "matrix.to/#/@"),
    "plain-mentions": (plain_mentions, "@a:"),
    "brackets": (lambda t: Filters.build(["x"], ["y.z"], ["[*]*("]).find(t, link_hosts(t)), "[(<"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_64kib_is_linear(name):
    work, unit = HOSTILE[name]
    big = (unit * (KIB64 // len(unit) + 1))[:KIB64]
    small = big[: KIB64 // 4]
    took_big, took_small = _timed(work, big), _timed(work, small)
    assert took_big < 1.0, f"{name}: {took_big:.3f} s for 64 KiB"
    # Linear: 4x the text, about 4x the time (a quadratic matcher would take 16x).
    assert took_big < 8 * took_small + 0.01, f"{name}: {took_small:.4f} s -> {took_big:.4f} s"


def test_a_64kib_message_through_the_stage_reader():
    class Event:
        event_id = "$e"
        source = {"type": "m.room.message", "content": {
            "msgtype": "m.text", "body": "@a:b " * (KIB64 // 5),
            "formatted_body": '<a href="https://matrix.to/#/@x:y">' * (KIB64 // 36),
            "m.mentions": {"user_ids": [f"@u{i}:x" for i in range(5000)], "room": True},
        }}  # fmt: skip

    started = time.perf_counter()
    obs = _observe("!r:x", Event(), "@s:x", 0, 50)
    assert time.perf_counter() - started < 1.0
    assert obs is not None and obs.room_mention and len(obs.mentions) >= 1000
