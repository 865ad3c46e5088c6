"""Policy-rule globs: `*` and `?` as Draupnir and Mjolnir mean them, in linear time."""

from __future__ import annotations

import time

import pytest

from bot.community.policy_glob import MAX_GLOB_LENGTH, Glob


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("@spam:evil.org", "@spam:evil.org", True),
        ("@spam:evil.org", "@spam:evil.org2", False),
        ("@spam:evil.org", "@Spam:evil.org", False),  # user ids are case-sensitive
        ("@*:evil.org", "@anyone:evil.org", True),
        ("@*:evil.org", "@anyone:good.org", False),
        ("@*:evil.org", "@:evil.org", True),  # * matches nothing too
        ("@spam?:x", "@spam1:x", True),
        ("@spam?:x", "@spam:x", False),
        ("@spam?:x", "@spam12:x", False),
        ("*", "", True),
        ("*", "anything", True),
        ("", "", True),
        ("", "a", False),
        ("?", "", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "acb", False),
        ("a*b*c", "abcb", False),
        ("a*ab", "aab", True),  # the end is anchored, not the greedy middle
        ("*ab*ab", "abab", True),
        ("*a?c*", "xxabcxx", True),
        ("*a?c*", "xxacxx", False),
        ("**a**", "a", True),
        ("*?*?*", "a", False),
        ("*?*?*", "ab", True),
        ("@bad*:*", "@badger:example.org", True),
        ("*aab", "aaab", True),
        ("*a?ab*", "aaab", True),
        ("*a?ab", "aaab", True),
        ("*ab?ab", "abaab", True),
        ("*ab?ab", "abab", False),
        ("*ab?ab", "xabXab", True),
    ],
)
def test_glob_semantics(pattern, text, expected):
    assert Glob.compile(pattern).matches(text) is expected


def test_server_globs_ignore_case():
    glob = Glob.compile("*.Evil.ORG", case_sensitive=False)
    assert glob.matches("matrix.evil.org")
    assert glob.matches("MATRIX.EVIL.ORG")
    assert not glob.matches("evil.org")


def test_an_over_long_glob_is_refused():
    with pytest.raises(ValueError):
        Glob.compile("a" * (MAX_GLOB_LENGTH + 1))


def _seconds(pattern: str, text: str) -> float:
    glob = Glob.compile(pattern)
    started = time.perf_counter()
    assert not glob.matches(text)
    return time.perf_counter() - started


@pytest.mark.parametrize(
    "pattern",
    [
        "*a" * 500 + "b",  # the classic: exponential for backtracking matchers
        "*" + "a?" * 250 + "b*",
        "a*" * 300 + "?" * 200 + "b",
    ],
)
def test_hostile_globs_take_linear_time(pattern):
    """A backtracking matcher (fnmatch's regex, or a naive recursive one) takes from seconds to
    forever on these; ours reads the text once per segment search."""
    small = _seconds(pattern, "a" * 5_000)
    large = _seconds(pattern, "a" * 50_000)
    assert large < 1.0
    # Ten times the text costs about ten times the time (generous: 40x allows for noise).
    assert large < max(small, 1e-4) * 40


def test_matching_a_list_of_rules_is_fast():
    globs = [Glob.compile(f"@spammer{i}*:evil{i}.org") for i in range(2_000)]
    started = time.perf_counter()
    for _ in range(10):
        assert not any(g.matches("@alice:example.org") for g in globs)
    assert time.perf_counter() - started < 1.0


def test_agrees_with_fnmatch_on_random_small_cases():
    """fnmatch (a regex, fine on tiny inputs) as the oracle for the semantics."""
    import fnmatch
    import random

    rng = random.Random(12)
    for _ in range(5_000):
        pattern = "".join(rng.choice("ab*?") for _ in range(rng.randint(0, 7)))
        text = "".join(rng.choice("abc") for _ in range(rng.randint(0, 9)))
        assert Glob.compile(pattern).matches(text) is fnmatch.fnmatchcase(text, pattern), (
            pattern,
            text,
        )
