"""Watches each sync for the state that ban lists and room upgrades act on: policy rules and
redactions in followed list rooms, members arriving in community rooms, tombstones. The sync loop
only hands the events over (no waiting); one worker acts on them in arrival order, so a rule
added and withdrawn in one sync ends withdrawn, and a slow ban (rate limits) never holds up the
sync or other members' commands. One failing item is logged and the next one goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from nio import AsyncClient, SyncResponse

from bot.community.policy_lists import PolicyLists
from bot.community.policy_rules import rule_kind
from bot.community.room_upgrades import RoomUpgrades
from bot.community.welcome import WelcomeService
from bot.matrix.policy_port import MEMBERSHIPS_ACTED_ON
from bot.matrix.room_actions import MatrixRoomActions
from bot.matrix.room_kinds import RoomKinds

log = structlog.get_logger(__name__)

MAX_QUEUED = 100_000  # beyond this a sync's items are dropped (logged); start-up reconciles


class StateWatch:
    def __init__(
        self, client: AsyncClient, lists: PolicyLists, upgrades: RoomUpgrades, kinds: RoomKinds
    ) -> None:
        self._client = client
        self._lists = lists
        self._upgrades = upgrades
        self._kinds = kinds
        self._queue: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue(MAX_QUEUED)
        self.idle = asyncio.Event()  # set while nothing waits (tests wait on it)
        self.idle.set()

    def on_sync(self, response: SyncResponse) -> None:
        """Called by the dispatcher for every sync after the first; never blocks."""
        lists = self._lists.list_rooms
        for room_id, info in response.rooms.join.items():
            try:
                is_list = room_id in lists
                is_community = self._kinds.is_community(room_id)
                if not (is_list or is_community):
                    continue
                for event in [*info.state, *info.timeline.events]:
                    source = getattr(event, "source", None)
                    if isinstance(source, dict):
                        self._consider(room_id, source, is_list=is_list, is_community=is_community)
            except Exception:  # never the sync's problem
                log.exception("state_watch.room_failed", room_id=room_id)

    def _consider(
        self, room_id: str, event: dict[str, Any], *, is_list: bool, is_community: bool
    ) -> None:
        kind = event.get("type")
        if not isinstance(kind, str):
            return
        content = event.get("content")
        sender = str(event.get("sender", ""))
        if kind == "m.room.tombstone" and event.get("state_key") == "":
            replacement = content.get("replacement_room") if isinstance(content, dict) else None
            self._put(lambda: self._upgrades.on_tombstone(room_id, replacement, sender))
        elif is_list and rule_kind(kind) is not None and "state_key" in event:
            self._put(lambda: self._lists.on_rule_event(
                room_id, kind, event.get("state_key"), content, sender=sender,
                event_id=str(event.get("event_id", "")),
            ))  # fmt: skip
        elif is_list and kind == "m.room.redaction":
            redacts = event.get("redacts") or (content or {}).get("redacts")
            if isinstance(redacts, str):
                self._put(lambda: self._lists.on_redaction(room_id, redacts))
        elif is_community and kind == "m.room.member":
            member = event.get("state_key")
            membership = content.get("membership") if isinstance(content, dict) else None
            if isinstance(member, str) and membership in MEMBERSHIPS_ACTED_ON:
                self._put(lambda: self._lists.on_member(room_id, member))

    def _put(self, work: Callable[[], Awaitable[Any]]) -> None:
        try:
            self._queue.put_nowait(work)
        except asyncio.QueueFull:
            log.warning("state_watch.queue_full")
            return
        self.idle.clear()

    async def run(self, start: Callable[[], Awaitable[Any]] | None = None) -> None:
        """The worker: `start` first (the lists' start-up reconciliation), then the queue."""
        if start is not None:
            self._put(start)
        while True:
            work = await self._queue.get()
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("state_watch.item_failed")
            finally:
                self._queue.task_done()
                if self._queue.empty():
                    self.idle.set()
            await asyncio.sleep(0)  # an item with nothing to do still lets the loop breathe


def upgrade_follower(
    kinds: RoomKinds, actions: MatrixRoomActions, welcome: WelcomeService
) -> Callable[[str, str], Awaitable[None]]:
    """What follows an upgrade in memory: the new room is a community room (and a welcome room)
    in the old one's place, and the old id, given in a command or the config, means the new."""

    async def follow(old: str, new: str) -> None:
        kinds.follow_upgrade(old, new)
        for earlier, later in list(actions.successors.items()):
            if later == old:
                actions.successors[earlier] = new
        actions.successors[old] = new
        if old in welcome.rooms:
            welcome.rooms = (welcome.rooms - {old}) | {new}

    return follow
