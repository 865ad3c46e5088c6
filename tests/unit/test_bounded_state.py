"""State kept per key (conversation locks, per-member memos) must not grow with every key a crowd
can make up."""

from __future__ import annotations

import asyncio

import pytest

from bot.config import ConfigError, load_config
from bot.keyed_lock import KeyedLock
from bot.lru import LRUDict


async def test_keyed_locks_serialise_per_key_and_vanish_when_unused():
    locks: KeyedLock[str] = KeyedLock()
    order: list[str] = []

    async def turn(key: str, name: str, hold: float) -> None:
        async with locks(key):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    await asyncio.gather(turn("a", "a1", 0.05), turn("a", "a2", 0.0), turn("b", "b1", 0.0))
    assert order.index("a1 out") < order.index("a2 in")  # one after the other on one key
    assert order.index("b1 in") < order.index("a1 out")  # other keys do not wait
    assert len(locks) == 0
    for i in range(10_000):  # a member opening thread after thread
        async with locks(f"thread-{i}"):
            pass
    assert len(locks) == 0


async def test_a_cancelled_waiter_does_not_leak_its_lock():
    locks: KeyedLock[str] = KeyedLock()
    async with locks("k"):
        waiter = asyncio.create_task(locks("k").__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert len(locks) == 0


def test_lru_dict_keeps_the_most_recently_used():
    memo: LRUDict[str, int] = LRUDict(3)
    for i, key in enumerate("abcd"):
        memo[key] = i
    assert list(memo) == ["b", "c", "d"]
    assert memo["b"] == 1  # used: now the newest
    memo["e"] = 4
    assert list(memo) == ["d", "b", "e"]


def test_session_secret_must_be_long(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        '[matrix]\nhomeserver = "https://m.example.org"\nuser_id = "@bot:example.org"\n'
        'password = "pw"\n[web]\nsession_secret = "short"\n'
    )
    with pytest.raises(ConfigError) as problem:
        load_config(path, env={})
    assert "web.session_secret: must be at least 32 characters" in str(problem.value)
    assert "short" not in str(problem.value)  # never echoed
    path.write_text(path.read_text().replace('"short"', '"' + "s" * 32 + '"'))
    assert load_config(path, env={}).web.session_secret is not None


def test_max_tokens_has_a_sane_default_and_range(tmp_path):
    path = tmp_path / "config.toml"
    base = '[matrix]\nhomeserver = "https://m.example.org"\nuser_id = "@bot:example.org"\n'
    path.write_text(base + 'password = "pw"\n')
    assert load_config(path, env={}).gpt.max_tokens == 1024
    path.write_text(base + 'password = "pw"\n[gpt]\nmax_tokens = 0\n')
    with pytest.raises(ConfigError, match=r"gpt\.max_tokens"):
        load_config(path, env={})
