"""The ban-list service on a real SQLite store with a fake Matrix side: which bans a rule makes,
and that withdrawing it lifts exactly those."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bot.community.moderation import RoomActionError
from bot.community.policy_lists import PolicyError, PolicyLists
from bot.community.users import UserService
from bot.store.database import Database
from bot.store.migrate import upgrade_to_head
from bot.store.models import AuditEntry, PolicyBan, User

BOT = "@bot:home.org"
ADMIN_ROOM = "!admins:home.org"
LIST = "!list:home.org"


class FakeMatrix:
    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, str]] = {
            "!a:home.org": {"@spam1:evil.org": "join", "@alice:home.org": "join", BOT: "join"},
            "!b:home.org": {"@spam2:evil.org": "join", "@troll:evil.org": "join", BOT: "join"},
        }
        self.state: dict[str, list[dict[str, Any]]] = {LIST: []}
        self.acls: dict[str, dict[str, Any]] = {}
        self.posts: list[str] = []
        self.calls: list[tuple[str, str, str]] = []
        self.aliases: dict[str, str] = {"#coc:home.org": LIST, "#other:elsewhere.org": "!other:x"}

    async def join(self, room: str) -> str:
        self.calls.append(("join", room, ""))
        if room not in self.state and not room.startswith("#"):
            raise RoomActionError(f"no room {room}")
        return self.aliases.get(room, LIST)

    async def resolve_alias(self, alias: str) -> str | None:
        self.calls.append(("resolve", alias, ""))
        return self.aliases.get(alias)

    async def rule_events(self, room_id: str) -> list[dict[str, Any]]:
        return list(self.state[room_id])

    def community_rooms(self) -> list[str]:
        return sorted(self.rooms)

    def members(self, room_id: str) -> set[str]:
        return {m for m, s in self.rooms[room_id].items() if s in ("join", "invite")}

    async def membership(self, room_id: str, mxid: str) -> str | None:
        return self.rooms[room_id].get(mxid)

    async def ban(self, room_id: str, mxid: str, reason: str) -> None:
        self.calls.append(("ban", room_id, mxid))
        self.rooms[room_id][mxid] = "ban"

    async def unban(self, room_id: str, mxid: str) -> None:
        self.calls.append(("unban", room_id, mxid))
        self.rooms[room_id][mxid] = "leave"

    async def acl(self, room_id: str) -> dict[str, Any] | None:
        return self.acls.get(room_id)

    async def put_state(self, room_id: str, event_type: str, content: dict[str, Any],
                        state_key: str = "") -> None:  # fmt: skip
        if event_type == "m.room.server_acl":
            self.acls[room_id] = content
            return
        self.state[room_id] = [e for e in self.state[room_id] if e["state_key"] != state_key]
        if content:
            self.state[room_id].append(event(event_type, state_key, content, sender=BOT))

    def room_name(self, room_id: str) -> str:
        return room_id

    async def post(self, room_id: str, markdown: str) -> None:
        assert room_id == ADMIN_ROOM
        self.posts.append(markdown)


def event(event_type: str, state_key: str, content: dict[str, Any], *,
          sender: str = "@listmod:home.org") -> dict[str, Any]:  # fmt: skip
    return {"type": event_type, "state_key": state_key, "content": content,
            "sender": sender, "event_id": f"${state_key}"}  # fmt: skip


def user_rule(entity: str) -> dict[str, Any]:
    return event("m.policy.rule.user", f"rule:{entity}",
                 {"entity": entity, "recommendation": "m.ban", "reason": "spam"})  # fmt: skip


@pytest.fixture
async def db(tmp_path):  # type: ignore[no-untyped-def]
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    await upgrade_to_head(database)
    yield database
    await database.close()


def service(db: Database, matrix: FakeMatrix) -> PolicyLists:
    return PolicyLists(db, matrix, UserService(db, [BOT]), bot_user_id=BOT,
                       admin_room_id=ADMIN_ROOM)  # fmt: skip


async def recorded(db: Database) -> set[tuple[str, str, str]]:
    async with db.transaction() as session:
        return {(b.room_id, b.mxid, b.entity) for b in await session.scalars(select(PolicyBan))}


async def deliver(lists: PolicyLists, e: dict[str, Any]) -> None:
    await lists.on_rule_event(LIST, e["type"], e["state_key"], e["content"],
                              sender=e["sender"], event_id=e["event_id"])  # fmt: skip


async def test_withdrawing_a_rule_lifts_exactly_its_bans(db):
    matrix = FakeMatrix()
    matrix.state[LIST] = [user_rule("@spam*:evil.org")]
    lists = service(db, matrix)
    await lists.start()
    summary = await lists.subscribe("@admin:home.org", "#coc:home.org", None)
    assert summary.name == "coc" and summary.users == 1 and summary.bans == 2
    assert matrix.rooms["!a:home.org"]["@spam1:evil.org"] == "ban"
    assert matrix.rooms["!b:home.org"]["@spam2:evil.org"] == "ban"
    assert matrix.rooms["!a:home.org"]["@alice:home.org"] == "join"

    # A moderator bans @troll by hand; then a rule names @troll too: nothing recorded for it.
    matrix.rooms["!b:home.org"]["@troll:evil.org"] = "ban"
    await deliver(lists, user_rule("@troll:evil.org"))
    # A second rule also names @spam1.
    await deliver(lists, user_rule("@spam1:evil.org"))
    assert await recorded(db) == {
        ("!a:home.org", "@spam1:evil.org", "@spam*:evil.org"),
        ("!b:home.org", "@spam2:evil.org", "@spam*:evil.org"),
    }

    # The glob is withdrawn: @spam2 is unbanned; @spam1 stays banned (the other rule names
    # it, and now owns the ban); @troll's manual ban was never the list's.
    await deliver(lists, event("m.policy.rule.user", "rule:@spam*:evil.org", {}))
    assert matrix.rooms["!b:home.org"]["@spam2:evil.org"] == "leave"
    assert matrix.rooms["!a:home.org"]["@spam1:evil.org"] == "ban"
    assert matrix.rooms["!b:home.org"]["@troll:evil.org"] == "ban"
    assert await recorded(db) == {("!a:home.org", "@spam1:evil.org", "@spam1:evil.org")}

    # The troll rule withdrawn: the manual ban stays.
    await deliver(lists, event("m.policy.rule.user", "rule:@troll:evil.org", {}))
    assert matrix.rooms["!b:home.org"]["@troll:evil.org"] == "ban"
    assert ("unban", "!b:home.org", "@troll:evil.org") not in matrix.calls

    # Redacting the @spam1 rule withdraws it too.
    await lists.on_redaction(LIST, "$rule:@spam1:evil.org")
    assert matrix.rooms["!a:home.org"]["@spam1:evil.org"] == "leave"
    assert await recorded(db) == set()
    async with db.transaction() as session:
        actions = [a.action for a in await session.scalars(select(AuditEntry))]
    assert actions.count("lists.ban") == 2 and actions.count("lists.unban") == 2
    assert any("unbanned" in p for p in matrix.posts)


async def test_joins_are_checked_and_staff_is_exempt(db):
    matrix = FakeMatrix()
    matrix.state[LIST] = [user_rule("@*:evil.org")]
    users = UserService(db, [BOT])
    lists = PolicyLists(db, matrix, users, bot_user_id=BOT, admin_room_id=ADMIN_ROOM)
    async with db.transaction() as session:
        session.add(User(mxid="@mod:evil.org", role="moderator"))
    await lists.subscribe("@admin:home.org", LIST, "coc")
    matrix.rooms["!a:home.org"]["@late:evil.org"] = "join"
    await lists.on_member("!a:home.org", "@late:evil.org")
    assert matrix.rooms["!a:home.org"]["@late:evil.org"] == "ban"
    matrix.rooms["!a:home.org"]["@mod:evil.org"] = "join"
    await lists.on_member("!a:home.org", "@mod:evil.org")
    assert matrix.rooms["!a:home.org"]["@mod:evil.org"] == "join"  # staff is never list-banned
    matrix.rooms["!a:home.org"]["@fine:home.org"] = "join"
    await lists.on_member("!a:home.org", "@fine:home.org")
    assert matrix.rooms["!a:home.org"]["@fine:home.org"] == "join"


async def test_a_rule_withdrawn_while_the_bot_was_down_is_lifted_at_start(db):
    matrix = FakeMatrix()
    matrix.state[LIST] = [user_rule("@spam2:evil.org")]
    await service(db, matrix).subscribe("@admin:home.org", LIST, "coc")
    assert matrix.rooms["!b:home.org"]["@spam2:evil.org"] == "ban"
    matrix.state[LIST] = []  # withdrawn while we were away
    await service(db, matrix).start()
    assert matrix.rooms["!b:home.org"]["@spam2:evil.org"] == "leave"


async def test_server_rules_make_the_acl_and_spare_our_server(db):
    matrix = FakeMatrix()
    matrix.state[LIST] = [
        event("m.policy.rule.server", "s1", {"entity": "evil.org", "recommendation": "m.ban"}),
        event("m.policy.rule.server", "s2", {"entity": "*.org", "recommendation": "m.ban"}),
    ]
    lists = service(db, matrix)
    await lists.subscribe("@admin:home.org", LIST, "coc")
    assert matrix.acls["!a:home.org"] == {
        "allow": ["*"], "deny": ["evil.org"], "allow_ip_literals": True,
    }  # fmt: skip
    assert any("would cut off our own server" in p for p in matrix.posts)
    await deliver(lists, event("m.policy.rule.server", "s1", {}))
    assert matrix.acls["!b:home.org"]["deny"] == []


async def test_a_manual_deny_survives_list_syncs_and_withdrawn_rules(db):
    """Room admins' own server denies are theirs: a list sync adds the lists' denies to them, and
    a withdrawn rule takes back only its own (issue 12)."""
    matrix = FakeMatrix()
    matrix.acls["!a:home.org"] = {"allow": ["*"], "deny": ["mine.net"], "allow_ip_literals": True}
    matrix.state[LIST] = [
        event("m.policy.rule.server", "s1", {"entity": "evil.org", "recommendation": "m.ban"}),
    ]
    lists = service(db, matrix)
    await lists.subscribe("@admin:home.org", LIST, "coc")
    assert matrix.acls["!a:home.org"]["deny"] == ["evil.org", "mine.net"]
    assert matrix.acls["!b:home.org"]["deny"] == ["evil.org"]
    # Another admin denies a server by hand in !b after the sync; a new rule syncs again.
    matrix.acls["!b:home.org"] = {**matrix.acls["!b:home.org"], "deny": ["evil.org", "own.net"]}
    await deliver(lists, event("m.policy.rule.server", "s2",
                               {"entity": "bad.net", "recommendation": "m.ban"}))  # fmt: skip
    assert matrix.acls["!a:home.org"]["deny"] == ["bad.net", "evil.org", "mine.net"]
    assert matrix.acls["!b:home.org"]["deny"] == ["bad.net", "evil.org", "own.net"]
    # Both rules withdrawn: exactly the lists' denies go, after a restart too.
    await deliver(lists, event("m.policy.rule.server", "s1", {}))
    matrix.state[LIST] = [e for e in matrix.state[LIST] if e["state_key"] != "s1"]
    assert matrix.acls["!a:home.org"]["deny"] == ["bad.net", "mine.net"]
    matrix.state[LIST] = []
    await service(db, matrix).start()
    assert matrix.acls["!a:home.org"]["deny"] == ["mine.net"]
    assert matrix.acls["!b:home.org"]["deny"] == ["own.net"]


async def test_unsubscribe_by_alias_looks_up_and_never_joins(db):
    matrix = FakeMatrix()
    lists = service(db, matrix)
    await lists.subscribe("@admin:home.org", "#coc:home.org", None)
    joins = [c for c in matrix.calls if c[0] == "join"]
    # A list we do not follow, named by an alias (existing or not): looked up, never joined.
    for alias in ("#other:elsewhere.org", "#nowhere:elsewhere.org"):
        with pytest.raises(PolicyError, match="do not follow"):
            await lists.unsubscribe("@admin:home.org", alias)
        with pytest.raises(PolicyError, match="do not follow"):
            await lists.publish_ban("@mod:home.org", alias, "@troll:evil.org", None)
    assert [c for c in matrix.calls if c[0] == "join"] == joins
    assert ("resolve", "#other:elsewhere.org", "") in matrix.calls
    # The followed list, by its alias: found without a join.
    assert await lists.unsubscribe("@admin:home.org", "#coc:home.org") == "coc"
    assert [c for c in matrix.calls if c[0] == "join"] == joins
    assert lists.list_rooms == frozenset()


async def test_publish_and_withdraw_on_our_list(db):
    matrix = FakeMatrix()
    lists = service(db, matrix)
    await lists.subscribe("@admin:home.org", LIST, "coc")
    assert await lists.publish_ban("@mod:home.org", "coc", "@troll:evil.org", "rude") == "coc"
    [published] = matrix.state[LIST]
    assert published["type"] == "m.policy.rule.user"
    assert published["content"] == {
        "entity": "@troll:evil.org", "reason": "rude", "recommendation": "m.ban",
    }  # fmt: skip
    await deliver(lists, published)  # as the sync brings it back
    assert matrix.rooms["!b:home.org"]["@troll:evil.org"] == "ban"
    # Another moderator's rule on the same list is not ours to withdraw without --list.
    other = user_rule("@other:evil.org")
    matrix.state[LIST].append(other)
    await deliver(lists, other)
    assert await lists.withdraw_ban("@mod:home.org", "@other:evil.org", None) == []
    assert await lists.withdraw_ban("@mod:home.org", "@troll:evil.org", None) == ["coc"]
    assert [e["state_key"] for e in matrix.state[LIST]] == ["rule:@other:evil.org"]
    assert await lists.withdraw_ban("@mod:home.org", "@other:evil.org", "coc") == ["coc"]
    assert matrix.state[LIST] == []
    with pytest.raises(PolicyError):
        await lists.publish_ban("@mod:home.org", "nope", "@troll:evil.org", None)
    with pytest.raises(PolicyError):
        await lists.subscribe("@admin:home.org", LIST, "Bad Name!")


async def test_a_long_list_meets_big_rooms_in_linear_time(db, monkeypatch):
    """Subscribing (and starting) checks each member once against the rules — literal rules
    by entity, then the globs — never every rule against every member: 3,000 rules and 2,000
    members were 6 million glob matches (8 s with the event loop stalled) before."""
    from bot.community.policy_glob import Glob

    matrix = FakeMatrix()
    members = {f"@user{i}:home.org": "join" for i in range(1_000)}
    matrix.rooms = {
        "!a:home.org": {**members, "@spam7:evil.org": "join", BOT: "join"},
        "!b:home.org": {**members, "@bot-x:spam.net": "join", BOT: "join"},
    }
    matrix.state[LIST] = [user_rule(f"@spam{k}:evil.org") for k in range(3_000)]
    matrix.state[LIST] += [user_rule("@*:spam.net"), user_rule("@nobody?:nowhere.org")]
    calls = 0
    real = Glob.matches

    def counted(self: Glob, text: str) -> bool:
        nonlocal calls
        calls += 1
        return real(self, text)

    monkeypatch.setattr(Glob, "matches", counted)
    lists = service(db, matrix)
    await lists.subscribe("@admin:home.org", "#coc:home.org", None)
    assert matrix.rooms["!a:home.org"]["@spam7:evil.org"] == "ban"
    assert matrix.rooms["!b:home.org"]["@bot-x:spam.net"] == "ban"
    assert sum(state == "ban" for room in matrix.rooms.values() for state in room.values()) == 2
    checked = sum(len(room) for room in matrix.rooms.values())
    assert calls <= checked * 2  # the two globs, for each member at most
