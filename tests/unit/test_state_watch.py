"""The sync side of ban lists and upgrades: what is handed over, in order, without blocking the
sync; one failing item never stops the next."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from bot.matrix.state_watch import StateWatch

LIST, ROOM, OTHER = "!list:x", "!room:x", "!other:x"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.list_rooms = frozenset({LIST})
        self.fail_next = False

    async def _note(self, *call: Any) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        self.calls.append(call)

    async def on_rule_event(self, room: str, kind: str, key: Any, content: Any, *, sender: str,
                            event_id: str) -> None:  # fmt: skip
        await self._note("rule", room, kind, key, content, event_id)

    async def on_redaction(self, room: str, redacts: str) -> None:
        await self._note("redaction", room, redacts)

    async def on_member(self, room: str, mxid: str) -> None:
        await self._note("member", room, mxid)

    async def on_tombstone(self, room: str, replacement: Any, sender: str) -> None:
        await self._note("tombstone", room, replacement)


class Kinds:
    def is_community(self, room_id: str) -> bool:
        return room_id == ROOM


def ev(**source: Any) -> SimpleNamespace:
    return SimpleNamespace(source=source)


def sync(rooms: dict[str, list[SimpleNamespace]], state: dict[str, list] | None = None) -> Any:
    join = {
        room: SimpleNamespace(state=(state or {}).get(room, []),
                              timeline=SimpleNamespace(events=events))
        for room, events in rooms.items()
    }  # fmt: skip
    return SimpleNamespace(rooms=SimpleNamespace(join=join))


async def drained(watch: StateWatch) -> None:
    await asyncio.wait_for(watch.idle.wait(), 5)


async def test_hands_over_rules_redactions_members_and_tombstones_in_order():
    recorder = Recorder()
    watch = StateWatch(None, recorder, recorder, Kinds())  # type: ignore[arg-type]
    worker = asyncio.create_task(watch.run())
    rule = {"entity": "@a:x", "recommendation": "m.ban"}
    watch.on_sync(sync(
        {
            LIST: [
                ev(type="m.policy.rule.user", state_key="r1", content=rule, event_id="$1"),
                ev(type="m.policy.rule.user", state_key="r1", content={}, event_id="$2"),
                ev(type="m.room.redaction", redacts="$0", content={}),
                ev(type="m.room.message", content={"body": "chatter"}),
            ],
            ROOM: [
                ev(type="m.room.member", state_key="@b:x", content={"membership": "join"}),
                ev(type="m.room.member", state_key="@c:x", content={"membership": "leave"}),
                ev(type="m.policy.rule.user", state_key="r", content=rule),  # not a list room
                ev(type="m.room.tombstone", state_key="", content={"replacement_room": "!n:x"}),
            ],
            OTHER: [ev(type="m.room.member", state_key="@d:x", content={"membership": "join"})],
        },
        state={LIST: [ev(type="m.policy.rule.server", state_key="s", content=rule,
                         event_id="$s")]},
    ))  # fmt: skip
    await drained(watch)
    assert recorder.calls == [
        ("rule", LIST, "m.policy.rule.server", "s", rule, "$s"),
        ("rule", LIST, "m.policy.rule.user", "r1", rule, "$1"),
        ("rule", LIST, "m.policy.rule.user", "r1", {}, "$2"),
        ("redaction", LIST, "$0"),
        ("member", ROOM, "@b:x"),
        ("tombstone", ROOM, "!n:x"),
    ]
    worker.cancel()


async def test_a_failing_item_does_not_stop_the_next_and_big_events_do_not_block():
    recorder = Recorder()
    watch = StateWatch(None, recorder, recorder, Kinds())  # type: ignore[arg-type]
    worker = asyncio.create_task(watch.run())
    recorder.fail_next = True
    huge = {"entity": "@*:x", "recommendation": "m.ban", "reason": "x" * 64_000}
    started = time.perf_counter()
    watch.on_sync(sync({LIST: [
        ev(type="m.policy.rule.user", state_key="a", content=huge, event_id="$a"),
        ev(type="m.policy.rule.user", state_key="b", content={"nonsense": [1] * 10_000},
           event_id="$b"),
        ev(type=None, content=None),  # malformed: skipped
        ev(type="m.room.redaction"),  # no target: skipped
    ]}))  # fmt: skip
    assert time.perf_counter() - started < 0.05  # handing over never waits for the work
    await drained(watch)
    assert [c[3] for c in recorder.calls] == ["b"]  # "a" failed, "b" was still handled
    assert not worker.done()
    worker.cancel()
