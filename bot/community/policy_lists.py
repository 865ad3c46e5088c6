"""Shared ban lists, applied: the community follows policy rooms (`!lists subscribe`), keeps their
rules in a RuleBook, and acts on `m.ban` rules in its rooms — user rules ban matching members (on
a new rule, and on every join), server rules become denies in the rooms' server ACL, next to the
rooms' own. Every ban a rule causes is recorded with that rule, so a withdrawn rule lifts exactly
its bans: a moderator's own ban of the same member was never recorded, and stays. Likewise the
denies the lists wrote into each room's ACL are recorded, and a sync takes back only those.

The Matrix side is a PolicyPort (bot/matrix/policy_port.py). All work runs one piece at a time
(one lock): rules and bans never race each other."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from bot.community.audit import add_entry
from bot.community.markdown import code_span, escape_markdown, shorten
from bot.community.moderation import RoomActionError
from bot.community.policy_rules import (
    KINDS,
    BanDecision,
    PolicyRule,
    RuleBook,
    RuleKey,
    acl_content,
    ban_for_member,
    bans_for,
    event_type_for,
    parse_rule,
    server_acl,
    server_of,
)
from bot.community.roles import Role
from bot.community.users import UserService
from bot.store import policy_lists as store
from bot.store.database import Database
from bot.store.models import PolicyBan, PolicyList

log = structlog.get_logger(__name__)

BAN_REASON_PREFIX = "ban list"
ECHO = 120  # an entity shown in the admin room is cut to this many characters
ENFORCE_YIELD_EVERY = 200  # members checked against the rules between two breaths of the loop
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class PolicyError(Exception):
    """Said to the moderator as it is."""


class PolicyPort(Protocol):
    """What the lists need from Matrix. Methods raise RoomActionError (no, and why)."""

    async def join(self, room: str) -> str: ...
    async def resolve_alias(self, alias: str) -> str | None:
        """The room id an alias names (room directory lookup, never a join); None: no such
        alias."""
        ...

    async def rule_events(self, room_id: str) -> list[dict[str, Any]]: ...
    def community_rooms(self) -> list[str]: ...
    def members(self, room_id: str) -> set[str]: ...
    async def membership(self, room_id: str, mxid: str) -> str | None: ...
    async def ban(self, room_id: str, mxid: str, reason: str) -> None: ...
    async def unban(self, room_id: str, mxid: str) -> None: ...
    async def acl(self, room_id: str) -> dict[str, Any] | None: ...
    async def put_state(
        self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
    ) -> None: ...
    def room_name(self, room_id: str) -> str: ...
    async def post(self, room_id: str, markdown: str) -> None: ...


@dataclass(frozen=True)
class ListSummary:
    name: str
    room_id: str
    room_name: str
    users: int
    servers: int
    rooms: int
    bans: int  # bans its rules caused, in force


def default_name(room: str) -> str:
    """A list's short name from its alias (`#coc-bans:example.org` -> `coc-bans`)."""
    local = room[1:].split(":", 1)[0].lower() if room.startswith("#") else ""
    local = re.sub(r"[^a-z0-9_-]", "-", local)[:32].strip("-")
    return local or "list"


def rule_state_key(entity: str) -> str:
    """The state key a rule we publish gets (Mjolnir's `rule:<entity>`), so `!unban` finds it."""
    return f"rule:{entity}"


class PolicyLists:
    def __init__(
        self, db: Database, port: PolicyPort, users: UserService, *, bot_user_id: str,
        admin_room_id: str | None = None,
    ) -> None:  # fmt: skip
        self._db = db
        self._port = port
        self._users = users
        self._bot = bot_user_id
        self._own_server = server_of(bot_user_id)
        self._admin_room = admin_room_id
        self.book = RuleBook()
        self._lists: dict[str, str] = {}  # list room id -> name
        self._lock = asyncio.Lock()

    @property
    def list_rooms(self) -> frozenset[str]:
        return frozenset(self._lists)

    def invite_refusal(self, room_id: str, inviter: str) -> str | None:
        """Why an invite of the bot must be refused under the followed lists (a room, an
        inviter or a server they ban), or None."""
        rule = self.book.invite_ban(room_id, inviter)
        if rule is None:
            return None
        name = self._lists.get(rule.key.list_room, rule.key.list_room)
        return f"{rule.key.kind} rule {rule.entity!r} of the list {name}"

    def is_list_room(self, room_id: str) -> bool:
        """A policy room the bot follows: never a community room, whatever its join rule."""
        return room_id in self._lists

    # -- start-up ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read every followed list, lift bans whose rule went away while the bot was down,
        apply every rule to the rooms as they are now, and bring the server ACLs up to date."""
        async with self._db.transaction() as session:
            lists = await store.all_lists(session)
        async with self._lock:
            self._lists = {row.room_id: row.name for row in lists}
            for row in lists:
                try:
                    await self._load(row.room_id)
                except RoomActionError as problem:
                    log.warning("lists.unreadable", room_id=row.room_id, error=str(problem))
            await self._lift_orphans()
            await self._enforce_all(report=False)
            await self._sync_acls()

    async def _load(self, list_room: str) -> list[PolicyRule]:
        rules = []
        for event in await self._port.rule_events(list_room):
            parsed = parse_rule(
                list_room, str(event.get("type", "")), event.get("state_key"),
                event.get("content"), sender=str(event.get("sender", "")),
                event_id=str(event.get("event_id", "")),
            )  # fmt: skip
            if parsed is not None and parsed[1] is not None:
                rules.append(parsed[1])
        self.book.replace_list(list_room, rules)
        return rules

    async def _lift_orphans(self) -> None:
        async with self._db.transaction() as session:
            recorded = await store.all_bans(session)
        for ban in recorded:
            key = RuleKey(ban.list_room_id, ban.rule_kind, ban.rule_key)  # type: ignore[arg-type]
            if ban.list_room_id in self._lists and self.book.get(key) is None:
                await self._lift([ban], why="its rule was withdrawn")

    # -- commands ---------------------------------------------------------------------------------

    async def subscribe(self, actor: str, room: str, name: str | None) -> ListSummary:
        name = (name or default_name(room)).lower()
        if not _NAME.match(name):
            raise PolicyError(
                "A list name is 1 to 32 lowercase letters, digits, `-` or `_`, starting with a "
                "letter or digit."
            )
        async with self._lock:
            room_id = await self._port.join(room)
            if room_id in self._port.community_rooms():
                raise PolicyError(f"{room} is a community room, not a ban list.")
            async with self._db.transaction() as session:
                taken = await store.list_by_name(session, name)
                if taken is not None and taken.room_id != room_id:
                    raise PolicyError(f"There is already a list called {name}; choose another.")
                existing = await session.get(PolicyList, room_id)
                if existing is not None:
                    raise PolicyError(f"I already follow {room} (as {existing.name}).")
                session.add(PolicyList(room_id=room_id, name=name, subscribed_by=actor))
                add_entry(session, actor=actor, action="lists.subscribe", target=room_id,
                          detail={"name": name})  # fmt: skip
            self._lists[room_id] = name
            await self._load(room_id)
            await self._enforce_all(report=False)
            await self._sync_acls()
            summary = await self._summary(room_id)
        await self._tell(
            f"📋 {escape_markdown(actor)} subscribed to the ban list **{escape_markdown(name)}** "
            f"({summary.users} user and {summary.servers} server rules; {summary.bans} bans now "
            "in force from it)."
        )
        return summary

    async def unsubscribe(self, actor: str, room: str) -> str:
        """Bans the list caused stay (they are no longer tied to it); its server rules leave
        the ACLs."""
        async with self._lock:
            row = await self._find(room)
            async with self._db.transaction() as session:
                await session.delete(await session.get(PolicyList, row.room_id))
                bans = await store.all_bans(session, row.room_id)
                for ban in bans:
                    await session.delete(ban)
                add_entry(session, actor=actor, action="lists.unsubscribe", target=row.room_id,
                          detail={"name": row.name, "bans_kept": len(bans)})  # fmt: skip
            del self._lists[row.room_id]
            self.book.drop_list(row.room_id)
            await self._sync_acls()
        await self._tell(
            f"📋 {escape_markdown(actor)} unsubscribed from the ban list "
            f"**{escape_markdown(row.name)}**; the {len(bans)} bans it caused stay."
        )
        return row.name

    async def _find(self, room_or_name: str) -> PolicyList:
        """A list we follow, by name, room id or alias. Only ever looks up: an alias is resolved
        through the room directory, never joined (`!lists unsubscribe #x` must not make the bot
        join #x)."""
        async with self._db.transaction() as session:
            row = await store.list_by_name(session, room_or_name.lower())
            if row is None and room_or_name.startswith("!"):
                row = await session.get(PolicyList, room_or_name)
        if row is None and room_or_name.startswith("#"):
            room_id = await self._port.resolve_alias(room_or_name)  # RoomActionError: said
            if room_id is not None:
                async with self._db.transaction() as session:
                    row = await session.get(PolicyList, room_id)
        if row is None:
            raise PolicyError(f"I do not follow a ban list {room_or_name}.")
        return row

    async def show(self) -> list[ListSummary]:
        async with self._db.transaction() as session:
            rows = await store.all_lists(session)
        return [await self._summary(row.room_id) for row in rows]

    async def _summary(self, room_id: str) -> ListSummary:
        counts = {k: sum(r.is_ban for r in self.book.rules(room_id, k)) for k in KINDS}
        async with self._db.transaction() as session:
            bans = len(await store.all_bans(session, room_id))
        return ListSummary(
            self._lists.get(room_id, room_id), room_id, self._port.room_name(room_id),
            counts["user"], counts["server"], counts["room"], bans,
        )  # fmt: skip

    async def publish_ban(self, actor: str, list_name: str, mxid: str, reason: str | None) -> str:
        """Add a user ban rule to one of our lists; the rule then acts like any other (it comes
        back through the sync). The list room's name, for the reply."""
        row = await self._find(list_name)
        entity_reason = (reason or "").strip()
        async with self._lock:
            await self._port.put_state(
                row.room_id, event_type_for("user"),
                {"entity": mxid, "reason": entity_reason, "recommendation": "m.ban"},
                rule_state_key(mxid),
            )  # fmt: skip
            async with self._db.transaction() as session:
                add_entry(session, actor=actor, action="lists.publish", target=mxid,
                          room_id=row.room_id, reason=entity_reason or None,
                          detail={"list": row.name})  # fmt: skip
        return row.name

    async def withdraw_ban(self, actor: str, mxid: str, list_name: str | None) -> list[str]:
        """Withdraw the user rules for exactly this member: from the named list, or else the
        rules the bot itself published (`!ban --list`), never another moderator's rule on a
        shared list we happen to be able to write. The names of the lists changed."""
        rows = [await self._find(list_name)] if list_name else None

        def ours(rule: PolicyRule) -> bool:
            return rule.entity == mxid and (list_name is not None or rule.sender == self._bot)

        async with self._lock:
            if rows is None:
                rooms = {r.key.list_room for r in self.book.rules(kind="user") if ours(r)}
                async with self._db.transaction() as session:
                    rows = [r for r in await store.all_lists(session) if r.room_id in rooms]
            changed = []
            for row in rows:
                keys = [r.key for r in self.book.rules(row.room_id, "user") if ours(r)]
                for key in keys:
                    try:
                        await self._port.put_state(row.room_id, event_type_for("user"), {},
                                                   key.state_key)  # fmt: skip
                    except RoomActionError as problem:
                        if list_name:
                            raise
                        log.info("lists.withdraw_refused", list=row.name, error=str(problem))
                        continue
                    if row.name not in changed:
                        changed.append(row.name)
            if list_name and not changed:
                raise PolicyError(f"The list {list_name} has no rule for {mxid}.")
            if changed:
                async with self._db.transaction() as session:
                    add_entry(session, actor=actor, action="lists.withdraw", target=mxid,
                              detail={"lists": changed})  # fmt: skip
        return changed

    async def follow_upgrade(self, old: str, new: str) -> None:
        """A community room was upgraded: members who reached the new room before the bot are
        checked against every rule, and its server ACL is brought up to date."""
        if not self.book:
            return
        async with self._lock:
            await self._enforce_all(report=True)
            await self._sync_acls()

    async def adopt_manual_ban(self, mxid: str, rooms: Iterable[str]) -> None:
        """A moderator banned this member by hand where a list had: the ban is theirs now, and
        withdrawing the rule will not lift it."""
        async with self._db.transaction() as session:
            for room_id in rooms:
                await store.forget_bans(session, room_id, [mxid])

    # -- events -----------------------------------------------------------------------------------

    async def on_rule_event(
        self, list_room: str, event_type: str, state_key: Any, content: Any, *, sender: str = "",
        event_id: str = "",
    ) -> None:  # fmt: skip
        if list_room not in self._lists:
            return
        parsed = parse_rule(list_room, event_type, state_key, content, sender=sender,
                            event_id=event_id)  # fmt: skip
        if parsed is None:
            return
        key, rule = parsed
        async with self._lock:
            await self._change(key, rule)

    async def on_redaction(self, list_room: str, redacted_event_id: str) -> None:
        if list_room not in self._lists:
            return
        async with self._lock:
            key = self.book.key_of_event(redacted_event_id)
            if key is not None:
                await self._change(key, None)

    async def _change(self, key: RuleKey, rule: PolicyRule | None) -> None:
        old = self.book.put(key, rule)
        if old == rule:
            return
        if old is not None and (rule is None or rule.entity != old.entity or not rule.is_ban):
            async with self._db.transaction() as session:
                caused = await store.bans_of_rule(session, key.list_room, key.kind, key.state_key)
            await self._lift(caused, why="its rule was withdrawn")
        if rule is not None and rule.is_ban:
            if key.kind == "user":
                await self._enforce(rule, report=True)
        if key.kind == "server" and (
            (old is not None and old.is_ban) or (rule is not None and rule.is_ban)
        ):
            await self._sync_acls()

    async def on_member(self, room_id: str, mxid: str) -> None:
        """A member joined (or was invited to, or knocks at) a community room."""
        if not self.book or room_id not in self._port.community_rooms():
            return
        decision = ban_for_member(self.book, room_id, mxid, exempt=[self._bot])
        if decision is None or await self._exempt(mxid):
            return
        async with self._lock:
            await self._ban([decision], report=True)

    # -- acting ---------------------------------------------------------------------------------

    async def _exempt(self, mxid: str) -> bool:
        return mxid == self._bot or await self._users.role_of(mxid) >= Role.MODERATOR

    async def _enforce(self, rule: PolicyRule, *, report: bool) -> None:
        rooms = {room: self._port.members(room) for room in self._port.community_rooms()}
        decisions = [
            d for d in bans_for(rule, rooms, exempt=[self._bot]) if not await self._exempt(d.mxid)
        ]
        await self._ban(decisions, report=report)

    async def _enforce_all(self, *, report: bool) -> None:
        """Every rule against every member of the community rooms: each member is looked up
        once (literal rules by entity, then the globs), never every rule against every member,
        and the loop breathes between members, so a list of thousands of rules and rooms of
        thousands of members never stall the bot."""
        decisions: list[BanDecision] = []
        checked = 0
        for room in self._port.community_rooms():
            for mxid in sorted(self._port.members(room)):
                decision = ban_for_member(self.book, room, mxid, exempt=[self._bot])
                if decision is not None and not await self._exempt(mxid):
                    decisions.append(decision)
                checked += 1
                if checked % ENFORCE_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        await self._ban(decisions, report=report)

    async def _ban(self, decisions: list[BanDecision], *, report: bool) -> None:
        done: list[BanDecision] = []
        problems: list[str] = []
        for decision in decisions:
            rule = decision.rule
            try:
                if await self._port.membership(decision.room_id, decision.mxid) == "ban":
                    continue  # banned already (by hand, or by another rule): not ours to lift
                reason = f"{BAN_REASON_PREFIX} {self._lists.get(rule.key.list_room, '?')}"
                if rule.reason:
                    reason += f": {rule.reason}"
                await self._port.ban(decision.room_id, decision.mxid, reason)
            except RoomActionError as problem:
                problems.append(str(problem))
                continue
            done.append(decision)
            async with self._db.transaction() as session:
                await store.forget_bans(session, decision.room_id, [decision.mxid])
                session.add(PolicyBan(
                    room_id=decision.room_id, mxid=decision.mxid, list_room_id=rule.key.list_room,
                    rule_kind=rule.key.kind, rule_key=rule.key.state_key, entity=rule.entity,
                ))  # fmt: skip
                add_entry(session, actor=self._bot, action="lists.ban", target=decision.mxid,
                          room_id=decision.room_id, reason=rule.reason or None,
                          detail={"list": self._lists.get(rule.key.list_room),
                                  "entity": rule.entity, "rule_by": rule.sender})  # fmt: skip
        if done or problems:
            log.info("lists.banned", bans=len(done), problems=len(problems))
        if report and (done or problems):
            lines = [
                f"🔨 {escape_markdown(d.mxid)} banned in "
                f"{escape_markdown(self._port.room_name(d.room_id))} by the rule "
                f"{code_span(shorten(d.rule.entity, ECHO))} of "
                f"**{escape_markdown(self._lists.get(d.rule.key.list_room, '?'))}**"
                for d in done
            ]
            lines += [f"⚠️ {escape_markdown(p)}" for p in problems]
            await self._tell("\n".join(lines))

    async def _lift(self, bans: list[PolicyBan], *, why: str) -> None:
        lifted: list[PolicyBan] = []
        problems: list[str] = []
        for ban in bans:
            # Another rule may still ban this member: the ban stays, now that rule's.
            other = ban_for_member(self.book, ban.room_id, ban.mxid)
            try:
                if other is not None:
                    async with self._db.transaction() as session:
                        row = await session.get(PolicyBan, ban.id)
                        if row is not None:
                            row.list_room_id, row.rule_kind = other.rule.key.list_room, "user"
                            row.rule_key, row.entity = other.rule.key.state_key, other.rule.entity
                    continue
                if await self._port.membership(ban.room_id, ban.mxid) == "ban":
                    await self._port.unban(ban.room_id, ban.mxid)
            except RoomActionError as problem:
                problems.append(str(problem))
                continue
            lifted.append(ban)
            async with self._db.transaction() as session:
                row = await session.get(PolicyBan, ban.id)
                if row is not None:
                    await session.delete(row)
                add_entry(session, actor=self._bot, action="lists.unban", target=ban.mxid,
                          room_id=ban.room_id, reason=why,
                          detail={"list": self._lists.get(ban.list_room_id, ban.list_room_id),
                                  "entity": ban.entity})  # fmt: skip
        if lifted or problems:
            lines = [
                f"🕊️ {escape_markdown(b.mxid)} unbanned in "
                f"{escape_markdown(self._port.room_name(b.room_id))}: the rule "
                f"{code_span(shorten(b.entity, ECHO))} was withdrawn"
                for b in lifted
            ]
            lines += [f"⚠️ {escape_markdown(p)}" for p in problems]
            await self._tell("\n".join(lines))

    async def _sync_acls(self) -> None:
        """Each room's deny list becomes (its denies - what the lists wrote there before) | the
        lists' denies now: a deny a room admin added by hand survives every sync and every
        withdrawn rule."""
        acl = server_acl(self.book, self._own_server)
        for room_id in self._port.community_rooms():
            async with self._db.transaction() as session:
                written = await store.acl_denies_written(session, room_id)
            try:
                update = acl_content(acl, await self._port.acl(room_id), written)
                if update.content is not None:
                    await self._port.put_state(room_id, "m.room.server_acl", update.content)
            except RoomActionError as problem:
                await self._tell(f"⚠️ {escape_markdown(str(problem))}")
                continue
            async with self._db.transaction() as session:
                if update.written != written:
                    await store.set_acl_denies_written(session, room_id, update.written)
                if update.content is None:
                    continue
                add_entry(session, actor=self._bot, action="lists.server_acl", room_id=room_id,
                          detail={"deny": update.content["deny"], "lists": sorted(update.written),
                                  "spared": list(acl.spared)})  # fmt: skip
            manual = len(update.content["deny"]) - len(update.written)
            denied = ", ".join(f"{code_span(shorten(s, ECHO))}" for s in acl.deny) or "nobody"
            await self._tell(
                f"🛡️ Server ACL of {escape_markdown(self._port.room_name(room_id))} now denies "
                f"{denied} from the lists"
                + (f", and {manual} servers the room denied itself" if manual else "")
                + "."
                + (
                    f" Not applied (they would cut off our own server): "
                    f"{', '.join(f'{code_span(shorten(s, ECHO))}' for s in acl.spared)}."
                    if acl.spared else ""
                )
            )  # fmt: skip

    async def _tell(self, markdown: str) -> None:
        if self._admin_room is None or not markdown:
            return
        try:
            await self._port.post(self._admin_room, markdown)
        except RoomActionError as problem:
            log.warning("lists.admin_room_unreachable", error=str(problem))
