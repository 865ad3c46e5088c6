"""Paced redactions: they wait while the bot's replies go out, wait out M_LIMIT_EXCEEDED with a
reserve and slow down, speed up again on success, and never redact the same event twice."""

from __future__ import annotations

import asyncio
import time

from nio import ErrorResponse

from bot.matrix import redaction_pacer
from bot.matrix.redaction_pacer import RedactionPacer


class FakeClient:
    def __init__(self, limited: int = 0) -> None:
        self.limited = limited
        self.redacted: list[tuple[str, float]] = []

    async def room_redact(self, room_id: str, event_id: str, reason: str) -> object:
        if self.limited:
            self.limited -= 1
            return ErrorResponse("slow down", "M_LIMIT_EXCEEDED", retry_after_ms=100)
        self.redacted.append((event_id, time.monotonic()))
        return object()


class FakeSender:
    busy = False


async def _drained(pacer: RedactionPacer, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while len(pacer) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)


async def test_redactions_go_out_once_each_in_order(monkeypatch):
    monkeypatch.setattr(redaction_pacer, "REPLY_QUIET_S", 0.0)
    client = FakeClient()
    pacer = RedactionPacer(client, FakeSender(), interval=0.01)  # type: ignore[arg-type]
    pacer.add("!r:x", ["$1", "$2", "$1"], "flood")
    pacer.add("!r:x", ["$2", "$3"], "flood")
    await _drained(pacer)
    assert [e for e, _ in client.redacted] == ["$1", "$2", "$3"]
    await pacer.stop()


async def test_a_rate_limit_is_waited_out_with_a_reserve_and_slows_the_pace(monkeypatch):
    monkeypatch.setattr(redaction_pacer, "REPLY_QUIET_S", 0.0)
    client = FakeClient(limited=1)
    pacer = RedactionPacer(client, FakeSender(), interval=0.01)  # type: ignore[arg-type]
    started = time.monotonic()
    pacer.add("!r:x", ["$1"], "flood")
    await _drained(pacer)
    assert [e for e, _ in client.redacted] == ["$1"]
    assert client.redacted[0][1] - started >= 0.2  # twice the 100 ms asked for
    assert pacer.rate_limited == 1 and pacer.interval >= 0.01
    await pacer.stop()


async def test_redactions_wait_while_a_reply_is_being_sent(monkeypatch):
    monkeypatch.setattr(redaction_pacer, "REPLY_QUIET_S", 0.2)
    client, sender = FakeClient(), FakeSender()
    sender.busy = True
    pacer = RedactionPacer(client, sender, interval=0.01)  # type: ignore[arg-type]
    pacer.add("!r:x", ["$1"], "flood")
    await asyncio.sleep(0.5)
    assert client.redacted == []  # the reply goes first
    sender.busy = False
    released = time.monotonic()
    await _drained(pacer)
    assert client.redacted and client.redacted[0][1] - released >= 0.05
    await pacer.stop()
