"""The protections stage's service: every event in a community room passes `screen()` between the
router and the handlers. It leaves exempt members alone (moderators and admins by role, the allow
list, room power at `exempt_power_level`), asks the rules (protection_rules.py) what to do, and
acts through the room actions moderation uses — in the background, so the sync loop and the
rooms' command queues never wait on it. Everything that would send a message is batched: one
warning per room for several members, one power-level change for several mutes, one admin-room
report for several actions; redactions are queued and paced by the Matrix side. Every action is
audited and reported in the admin room with the command that undoes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import structlog

from bot.community.audit import AuditLog
from bot.community.markdown import escape_markdown, mention, shorten
from bot.community.moderation import RoomActionError
from bot.community.permissions import Party, check_target
from bot.community.protection_actions import ProtectionActions
from bot.community.protection_rules import Decision, Observation, ProtectionRules
from bot.community.protection_settings import (
    KEYS,
    NAMES,
    CommunityProtections,
    RoomProtections,
    SettingError,
    parse_value,
    show_value,
)
from bot.community.roles import Role
from bot.community.users import UserService
from bot.lru import LRUDict
from bot.metrics import NO_METRICS, Metrics
from bot.store.models import utcnow
from bot.store.room_protections import Lockdown, RoomProtectionStore

log = structlog.get_logger(__name__)

BATCH_S = 0.3  # mutes and warnings of one room within this are sent as one event
REPORT_BATCH_S = 2.0  # admin-room reports within this go out as one message
ROLE_CACHE_S = 30.0
MUTE_SETTLE_S = 60.0  # a member muted this recently is not muted again (one event is enough)
PAST = {"warn": "warned", "redact": "redacted", "mute": "muted", "kick": "kicked",
        "ban": "banned", "hold": "held back", "report": "reported"}  # fmt: skip


class _Batch:
    """Items gathered per key for a short while, then handed over together."""

    def __init__(self, delay: float, flush: Callable[[str, list[Any]], Coroutine[Any, Any, None]],
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:  # fmt: skip
        self._delay, self._flush, self._spawn = delay, flush, spawn
        self._pending: dict[str, list[Any]] = {}

    def add(self, key: str, item: Any) -> None:
        if key in self._pending:
            self._pending[key].append(item)
            return
        self._pending[key] = [item]
        self._spawn(self._later(key))

    async def _later(self, key: str) -> None:
        await asyncio.sleep(self._delay)
        await self._flush(key, self._pending.pop(key, []))


class ProtectionService:
    def __init__(
        self, store: RoomProtectionStore, community: CommunityProtections,
        actions: ProtectionActions, users: UserService, audit: AuditLog, *, bot_user_id: str,
        admin_room_id: str | None, prefix: str = "!", clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._store, self.community, self._actions = store, community, actions
        self._users, self._audit, self._me = users, audit, bot_user_id
        self._admin_room, self._prefix, self._clock = admin_room_id, prefix, clock
        self.rules = ProtectionRules()
        self.metrics: Metrics = NO_METRICS  # protections fired, by protection and action
        self._overrides: dict[str, dict[str, dict[str, Any]]] = {}
        self._settings: dict[str, RoomProtections] = {}
        self._roles: LRUDict[str, tuple[float, Role]] = LRUDict(10_000)
        self._seen: LRUDict[str, None] = LRUDict(20_000)  # event ids screened already
        self._muted: LRUDict[tuple[str, str], float] = LRUDict(10_000)  # (room, member) -> when
        self._tasks: set[asyncio.Task[None]] = set()
        self._reopen: dict[str, asyncio.Task[None]] = {}
        self.locked_rooms: set[str] = set()  # closed by a join wave: still community rooms
        self._mutes = _Batch(BATCH_S, self._flush_mutes, self._spawn)
        self._warnings = _Batch(BATCH_S, self._flush_warnings, self._spawn)
        self._reports = _Batch(REPORT_BATCH_S, self._flush_reports, self._spawn)
        self._unredacted = _Batch(REPORT_BATCH_S, self._flush_unredacted, self._spawn)
        self.acted: list[tuple[float, Decision]] = []  # recent actions, for tests and benchmarks

    # -- start and stop --------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the rooms' overrides; reopen rooms whose cool-down passed while the bot was down,
        and schedule the others."""
        self._overrides = await self._store.all_overrides()
        self._settings.clear()
        for lockdown in await self._store.lockdowns():
            self.locked_rooms.add(lockdown.room_id)
            self._schedule_reopen(lockdown)

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._reopen.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("protections.action_failed")

    # -- settings ----------------------------------------------------------------------------------

    def settings_for(self, room_id: str) -> RoomProtections:
        settings = self._settings.get(room_id)
        if settings is None:
            settings = self.community.for_room(self._overrides.get(room_id, {}))
            self._settings[room_id] = settings
        return settings

    async def set_option(
        self, room_id: str, name: str, key: str, value_text: str, actor: str
    ) -> str:
        """Raises SettingError (nothing changed) on a bad name, key or value."""
        try:
            value = parse_value(name, key, value_text)
        except SettingError as problem:
            raise SettingError(f"{name} {key}: {problem}") from None
        settings = await self._store.set_override(room_id, name, key, value, actor=actor)
        self._overrides.setdefault(room_id, {})[name] = settings
        self._settings.pop(room_id, None)
        return show_value(name, key, self.settings_for(room_id)[name][key])

    def describe(self, room_id: str) -> str:
        """Every protection's settings in a room, overrides marked."""
        settings = self.settings_for(room_id)
        overrides = self._overrides.get(room_id, {})
        lines = []
        if self.community.dry_run:
            lines.append("**Dry run**: protections only report, they do not act.")
        for name in NAMES:
            values = settings[name]
            state = "on" if values["enabled"] else "off"
            mark = " (this room)" if "enabled" in overrides.get(name, {}) else ""
            details = ", ".join(
                f"{key} {escape_markdown(show_value(name, key, values[key]))}"
                + ("*" if key in overrides.get(name, {}) else "")
                for key in KEYS[name]
                if key != "enabled"
            )
            lines.append(f"- **{name}**: {state}{mark} — {details}")
        lines.append("\n\\* set for this room; the rest follows `[protections]`.")
        if room_id in self.locked_rooms:
            lines.insert(0, "🔒 This room is closed after a join wave; it reopens by itself.")
        return "\n".join(lines)

    # -- the stage ---------------------------------------------------------------------------------

    async def _role(self, mxid: str) -> Role:
        now = self._clock()
        cached = self._roles.get(mxid)
        if cached is not None and now - cached[0] < ROLE_CACHE_S:
            return cached[1]
        role = await self._users.role_of(mxid)
        self._roles[mxid] = (now, role)
        return role

    async def is_exempt(self, member: str, power: int) -> bool:
        return (
            member == self._me
            or member in self.community.allow
            or power >= self.community.exempt_power_level
            or await self._role(member) >= Role.MODERATOR
        )

    async def screen(self, obs: Observation) -> bool:
        """Count the event and act on what it calls for; False when it should go no further
        (a flood's message is not a command to answer)."""
        if obs.event_id in self._seen:
            return True  # the same event again (a sync replayed): counted once
        self._seen[obs.event_id] = None
        settings = self.settings_for(obs.room_id)
        if obs.kind == "message" and await self.is_exempt(obs.sender, obs.sender_power):
            return True
        decisions = self.rules.observe(obs, settings, self._clock())
        for decision in decisions:
            self._act(decision, settings)
        return not decisions

    # -- acting ------------------------------------------------------------------------------------

    def _act(self, decision: Decision, settings: RoomProtections) -> None:
        log.info("protections.triggered", protection=decision.protection, action=decision.action,
                 member=decision.member, room_id=decision.room_id)  # fmt: skip
        self.metrics.protection_fired(decision.protection, decision.action)
        self.acted.append((self._clock(), decision))
        del self.acted[:-1000]
        if self.community.dry_run:
            self._report(decision, dry_run=True)
            self._spawn(self._audited(decision, dry_run=True))
            return
        if decision.redact:
            by_room: dict[str, list[str]] = {}
            for item in decision.redact:
                room, _, event = item.rpartition("|")
                by_room.setdefault(room or decision.room_id, []).append(event)
            for room, events in by_room.items():
                self._actions.redact_later(room, events, decision.reason)
        if decision.action == "close":
            self._spawn(self._close(decision, settings))
            return
        if decision.action == "mute":
            key = (decision.room_id, decision.member)
            muted_at = self._muted.get(key)
            if muted_at is not None and self._clock() - muted_at < MUTE_SETTLE_S:
                return  # muted a moment ago: their messages still in flight change nothing
            self._muted[key] = self._clock()
            self._mutes.add(decision.room_id, decision)
            return  # audited and reported once the power levels changed
        if decision.action == "warn":
            self._warnings.add(decision.room_id, decision)
        elif decision.action == "hold":
            self._spawn(self._tell_new_joiner(decision))
        elif decision.action in ("kick", "ban"):
            self._spawn(self._remove(decision))
            return
        self._report(decision)
        self._spawn(self._audited(decision))

    async def _audited(self, decision: Decision, *, dry_run: bool = False,
                       detail: dict[str, Any] | None = None) -> None:  # fmt: skip
        await self._audit.record(
            actor=self._me, action=f"protect.{decision.action}", target=decision.member,
            room_id=decision.room_id, reason=decision.reason,
            detail={"protection": decision.protection, "offence": decision.offence,
                    "dry_run": dry_run, **(detail or {})},
        )  # fmt: skip

    def _undo(self, decision: Decision) -> str:
        p, who = self._prefix, decision.member
        room = f" --room {decision.room_id}"
        return {
            "mute": f"{p}unmute {who}{room}", "ban": f"{p}unban {who}{room}",
            "kick": f"{p}invite {who} {decision.room_id}",
            "close": f"{p}protect reopen --room {decision.room_id}",
        }.get(decision.action, "")  # fmt: skip

    def _report(self, decision: Decision, *, dry_run: bool = False,
                problem: str | None = None) -> None:  # fmt: skip
        if self._admin_room is None or not self.community.report:
            return
        self._reports.add(self._admin_room, (decision, dry_run, problem))

    async def _flush_reports(
        self, room_id: str, items: list[tuple[Decision, bool, str | None]]
    ) -> None:
        lines = []
        for decision, dry_run, problem in items[:50]:
            name = escape_markdown(self._actions.room_name(decision.room_id))
            verb = PAST.get(decision.action, decision.action)
            who = escape_markdown(decision.member)
            if decision.action == "close":
                line = f"🔒 **{name}** closed: {escape_markdown(decision.reason)}"
            else:
                line = f"🛡️ {who} {verb} in **{name}**: {escape_markdown(decision.reason)}"
            if dry_run:
                line = f"(dry run, nothing done) {line}"
            elif problem:
                line += f" — ⚠️ failed: {escape_markdown(shorten(problem, 200))}"
            elif undo := self._undo(decision):
                line += f" — undo: `{undo}`"
            lines.append(line)
        if len(items) > 50:
            lines.append(f"… and {len(items) - 50} more (see the audit log).")
        await self._tell_admins("\n\n".join(lines))

    def redaction_failed(self, room_id: str, error: str) -> None:
        """A caught message could not be removed (no power to redact, say): the admin room
        hears of it, gathered per room, never silently."""
        if self._admin_room is not None and self.community.report:
            self._unredacted.add(room_id, error)

    async def _flush_unredacted(self, room_id: str, errors: list[str]) -> None:
        name = escape_markdown(self._actions.room_name(room_id))
        what = "1 caught message" if len(errors) == 1 else f"{len(errors)} caught messages"
        why = ", ".join(escape_markdown(shorten(e, 80)) for e in dict.fromkeys(errors))
        await self._tell_admins(
            f"⚠️ I could not remove {what} in **{name}** ({why}). If I lack the power to redact "
            "there, give it to me, or remove them by hand."
        )

    async def _tell_admins(self, markdown: str) -> None:
        """A report in the admin room; one that cannot be posted is logged."""
        if self._admin_room is None:
            return
        try:
            await self._actions.post(self._admin_room, markdown)
        except RoomActionError as failed:
            log.warning("protections.report_failed", error=str(failed))

    async def _flush_warnings(self, room_id: str, decisions: list[Decision]) -> None:
        members = list(dict.fromkeys(d.member for d in decisions))
        reasons = "; ".join(dict.fromkeys(d.reason for d in decisions))
        text = (
            f"⚠️ {', '.join(mention(m) for m in members)}: please stop — {escape_markdown(reasons)}. "
            "Next time a moderator's action follows automatically."
        )
        try:
            await self._actions.post(room_id, text)
        except RoomActionError as failed:
            log.warning("protections.warning_failed", error=str(failed))

    async def _flush_mutes(self, room_id: str, decisions: list[Decision]) -> None:
        members = list(dict.fromkeys(d.member for d in decisions))
        try:
            previous = await self._actions.mute(room_id, members)
        except RoomActionError as failed:
            for decision in decisions:
                self._report(decision, problem=str(failed))
            return
        for decision in {d.member: d for d in decisions}.values():
            self._report(decision)
            await self._audited(decision, detail={"previous_level": previous.get(decision.member)})

    async def _remove(self, decision: Decision) -> None:
        try:
            if decision.action == "kick":
                await self._actions.kick(decision.room_id, decision.member, decision.reason)
            else:
                await self._actions.ban(decision.room_id, decision.member, decision.reason)
        except RoomActionError as failed:
            self._report(decision, problem=str(failed))
            return
        self._report(decision)
        await self._audited(decision)

    async def _tell_new_joiner(self, decision: Decision) -> None:
        name = escape_markdown(self._actions.room_name(decision.room_id))
        try:
            await self._actions.send_direct(decision.member, (
                f"I removed your message in **{name}**: {escape_markdown(decision.reason)}. "
                "New members can post links and media after a few minutes; until then, "
                "please write in words. Thank you for understanding!"
            ))  # fmt: skip
        except RoomActionError as failed:
            log.warning("protections.dm_failed", error=str(failed))

    # -- join waves --------------------------------------------------------------------------------

    async def _close(self, decision: Decision, settings: RoomProtections) -> None:
        room_id = decision.room_id
        if room_id in self.locked_rooms:
            return
        wave = settings["join_wave"]
        self.locked_rooms.add(room_id)
        try:
            before = await self._actions.join_rule(room_id)
            reopen_at = utcnow() + timedelta(seconds=wave["cooldown"])
            lockdown = Lockdown(room_id, before or {"join_rule": "public"}, reopen_at,
                                decision.reason)  # fmt: skip
            if not await self._store.lock(lockdown, actor=self._me):
                return
            await self._actions.set_join_rule(room_id, {**before, "join_rule": wave["rule"]})
        except RoomActionError as failed:
            self.locked_rooms.discard(room_id)
            await self._store.unlock(room_id, actor=self._me)
            self._report(decision, problem=str(failed))
            return
        minutes = max(1, round(wave["cooldown"] / 60))
        self._report(Decision(
            "join_wave", decision.member, room_id, "close",
            f"{decision.reason}; join rule {wave['rule']} for {minutes} min, then "
            f"{lockdown.join_rule.get('join_rule')} again",
        ))  # fmt: skip
        self._schedule_reopen(lockdown)

    def _schedule_reopen(self, lockdown: Lockdown) -> None:
        old = self._reopen.pop(lockdown.room_id, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, (lockdown.reopen_at - utcnow()).total_seconds())
        self._reopen[lockdown.room_id] = asyncio.create_task(self._reopen_later(lockdown, delay))

    async def _reopen_later(self, lockdown: Lockdown, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.reopen(lockdown.room_id, lockdown.join_rule)
        except RoomActionError as failed:
            log.warning("protections.reopen_failed", room_id=lockdown.room_id, error=str(failed))
        finally:
            self._reopen.pop(lockdown.room_id, None)

    async def reopen(self, room_id: str, join_rule: dict[str, Any] | None = None,
                     actor: str | None = None) -> bool:  # fmt: skip
        """Restore the join rule a wave replaced; False when the room is not closed."""
        if join_rule is None:
            saved = {x.room_id: x for x in await self._store.lockdowns()}.get(room_id)
            if saved is None:
                return False
            join_rule = saved.join_rule
        await self._actions.set_join_rule(room_id, join_rule)
        await self._store.unlock(room_id, actor=actor or self._me)
        self.locked_rooms.discard(room_id)
        task = self._reopen.pop(room_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        name = escape_markdown(self._actions.room_name(room_id))
        rule = escape_markdown(str(join_rule.get("join_rule")))
        await self._tell_admins(f"🔓 **{name}** is open again ({rule}).")
        return True

    # -- by hand -----------------------------------------------------------------------------------

    async def mute_by_hand(self, actor: Party, target: str, rooms: list[str],
                           reason: str | None) -> list[tuple[str, str | None]]:  # fmt: skip
        """(room, problem or None) per room. Raises permissions.Refused first."""
        check_target(actor, Party(target, await self._users.role_of(target)),
                     bot_user_id=self._me, action="mute")  # fmt: skip
        outcomes = []
        for room_id in rooms:
            try:
                previous = await self._actions.mute(room_id, [target])
            except RoomActionError as failed:
                outcomes.append((room_id, str(failed)))
                continue
            outcomes.append((room_id, None))
            await self._audit.record(actor=actor.mxid, action="mute", target=target,
                                     room_id=room_id, reason=reason,
                                     detail={"previous_level": previous.get(target)})  # fmt: skip
        return outcomes

    async def unmute(
        self, actor: Party, target: str, rooms: list[str]
    ) -> list[tuple[str, str | None]]:
        """Back to the level the member had before the (last) mute, or the room's default."""
        outcomes = []
        for room_id in rooms:
            level = await self._level_before_mute(target, room_id)
            try:
                await self._actions.unmute(room_id, target, level)
            except RoomActionError as failed:
                outcomes.append((room_id, str(failed)))
                continue
            outcomes.append((room_id, None))
            self.rules.offences.forget(target)
            self._muted.pop((room_id, target), None)
            await self._audit.record(actor=actor.mxid, action="unmute", target=target,
                                     room_id=room_id)  # fmt: skip
        return outcomes

    async def _level_before_mute(self, target: str, room_id: str) -> int | None:
        for record in await self._audit.recent(500):
            if (
                record.target == target
                and record.room_id == room_id
                and record.action in ("mute", "protect.mute")
            ):
                level = (record.detail or {}).get("previous_level")
                return level if isinstance(level, int) and level >= 0 else None
        return None
