"""Policy rules as Draupnir and Mjolnir publish them (MSC2313, the spec's "moderation policy
lists"): state events `m.policy.rule.user|room|server` (and the older `m.room.rule.*` and
`org.matrix.mjolnir.rule.*`), content `{entity, recommendation, reason}`. A rule is keyed by
(list room, kind, state key): the same key with empty content, or the event redacted, is the
rule withdrawn. Only `m.ban` (and its older name `org.matrix.mjolnir.ban`) is acted on.

Pure decisions, no Matrix: which members a set of rules bans, which server ACL they make, which
recorded bans a withdrawn rule lifts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.community.policy_glob import MAX_GLOB_LENGTH, Glob

Kind = Literal["user", "room", "server"]
KINDS: tuple[Kind, ...] = ("user", "room", "server")
BAN = "m.ban"
_BAN_NAMES = frozenset({"m.ban", "org.matrix.mjolnir.ban"})
_TYPE_PREFIXES = ("m.policy.rule.", "m.room.rule.", "org.matrix.mjolnir.rule.")
MAX_REASON = 500


def rule_kind(event_type: str) -> Kind | None:
    """The kind of a policy event type, stable or legacy; None for any other type."""
    for prefix in _TYPE_PREFIXES:
        if event_type.startswith(prefix):
            kind = event_type[len(prefix) :]
            return kind if kind in KINDS else None  # type: ignore[return-value]
    return None


def event_type_for(kind: Kind) -> str:
    return f"m.policy.rule.{kind}"


@dataclass(frozen=True)
class RuleKey:
    list_room: str
    kind: Kind
    state_key: str


@dataclass(frozen=True)
class PolicyRule:
    key: RuleKey
    entity: str
    recommendation: str
    reason: str
    sender: str = ""
    event_id: str = ""
    glob: Glob = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    @property
    def is_ban(self) -> bool:
        return self.recommendation in _BAN_NAMES

    def matches(self, value: str) -> bool:
        return self.glob.matches(value)


def parse_rule(
    list_room: str, event_type: str, state_key: Any, content: Any, *, sender: str = "",
    event_id: str = "",
) -> tuple[RuleKey, PolicyRule | None] | None:  # fmt: skip
    """None: not a policy event at all. (key, None): the key's rule withdrawn (empty or redacted
    content) or unusable (no entity, a non-string one, too long: treated as no rule).
    (key, rule): a rule, whatever its recommendation (`is_ban` says whether we act on it)."""
    kind = rule_kind(event_type)
    if kind is None or not isinstance(state_key, str):
        return None
    key = RuleKey(list_room, kind, state_key)
    if not isinstance(content, dict):
        return key, None
    entity, recommendation = content.get("entity"), content.get("recommendation")
    if not isinstance(entity, str) or not entity or not isinstance(recommendation, str):
        return key, None
    if len(entity) > MAX_GLOB_LENGTH:
        return key, None
    reason = content.get("reason")
    reason = reason[:MAX_REASON] if isinstance(reason, str) else ""
    # Server names are case-insensitive; user and room ids are not.
    glob = Glob.compile(entity, case_sensitive=kind != "server")
    return key, PolicyRule(key, entity, recommendation, reason, sender, event_id, glob)


def server_of(mxid: str) -> str:
    return mxid.split(":", 1)[1] if ":" in mxid else ""


def without_port(server: str) -> str:
    """A server name as server ACLs match it: without its port (`example.org:8448` ->
    `example.org`, `[::1]:8448` -> `[::1]`)."""
    if server.startswith("["):
        end = server.find("]")
        return server[: end + 1] if end > 0 else server
    return server.split(":", 1)[0]


class RuleBook:
    """The rules of every followed list, by key. Changing it says what changed."""

    def __init__(self) -> None:
        self._rules: dict[RuleKey, PolicyRule] = {}
        self._by_event: dict[str, RuleKey] = {}
        # User ban rules: literal ones by entity, globs apart (built again after a change), so
        # a member is checked in O(globs), not O(rules): lists hold thousands of literal rules.
        self._user_bans: tuple[dict[str, PolicyRule], list[PolicyRule]] | None = None

    def __len__(self) -> int:
        return len(self._rules)

    def rules(self, list_room: str | None = None, kind: Kind | None = None) -> list[PolicyRule]:
        return [
            r for r in self._rules.values()
            if (list_room is None or r.key.list_room == list_room)
            and (kind is None or r.key.kind == kind)
        ]  # fmt: skip

    def get(self, key: RuleKey) -> PolicyRule | None:
        return self._rules.get(key)

    def put(self, key: RuleKey, rule: PolicyRule | None) -> PolicyRule | None:
        """Set (or withdraw, with None) the rule at `key`; the rule it replaced, if any."""
        self._user_bans = None
        old = self._rules.pop(key, None)
        if old is not None and old.event_id:
            self._by_event.pop(old.event_id, None)
        if rule is not None:
            self._rules[key] = rule
            if rule.event_id:
                self._by_event[rule.event_id] = key
        return old

    def user_ban(self, mxid: str) -> PolicyRule | None:
        """The first user ban rule naming this member, if any."""
        if self._user_bans is None:
            literal: dict[str, PolicyRule] = {}
            globs: list[PolicyRule] = []
            for rule in self.rules(kind="user"):
                if rule.is_ban:
                    if rule.glob.is_literal:
                        literal.setdefault(rule.entity, rule)
                    else:
                        globs.append(rule)
            self._user_bans = literal, globs
        literal, globs = self._user_bans
        found = literal.get(mxid)
        if found is not None:
            return found
        return next((rule for rule in globs if rule.matches(mxid)), None)

    def invite_ban(self, room_id: str, inviter: str) -> PolicyRule | None:
        """The first ban rule an invite breaks: one naming the room, the inviter, or the
        inviter's server (room and server rules are few: a scan)."""
        for rule in self.rules(kind="room"):
            if rule.is_ban and rule.matches(room_id):
                return rule
        found = self.user_ban(inviter)
        if found is not None:
            return found
        server = without_port(server_of(inviter))
        return next((r for r in self.rules(kind="server") if r.is_ban and r.matches(server)), None)

    def key_of_event(self, event_id: str) -> RuleKey | None:
        return self._by_event.get(event_id)

    def drop_list(self, list_room: str) -> list[PolicyRule]:
        gone = self.rules(list_room)
        for rule in gone:
            self.put(rule.key, None)
        return gone

    def replace_list(self, list_room: str, rules: Iterable[PolicyRule]) -> None:
        self.drop_list(list_room)
        for rule in rules:
            self.put(rule.key, rule)


@dataclass(frozen=True)
class BanDecision:
    room_id: str
    mxid: str
    rule: PolicyRule


def bans_for(
    rule: PolicyRule, members_by_room: dict[str, Iterable[str]], *, exempt: Iterable[str] = ()
) -> list[BanDecision]:
    """The members (joined, invited, knocking) one new user rule bans, room by room."""
    if not rule.is_ban or rule.key.kind != "user":
        return []
    spared = frozenset(exempt)
    return [
        BanDecision(room, mxid, rule)
        for room, members in members_by_room.items()
        for mxid in sorted(members)
        if mxid not in spared and rule.matches(mxid)
    ]


def ban_for_member(
    book: RuleBook, room_id: str, mxid: str, *, exempt: Iterable[str] = ()
) -> BanDecision | None:
    """Whether a member arriving in a room is banned by a user rule (server rules work through
    the room's server ACL, which the homeserver enforces itself)."""
    if mxid in frozenset(exempt):
        return None
    rule = book.user_ban(mxid)
    return None if rule is None else BanDecision(room_id, mxid, rule)


@dataclass(frozen=True)
class RecordedBan:
    """A ban the lists caused, as the store keeps it."""

    room_id: str
    mxid: str
    key: RuleKey


def bans_to_lift(withdrawn: RuleKey, recorded: Iterable[RecordedBan]) -> list[RecordedBan]:
    """Exactly the bans the withdrawn rule caused: not those of another rule, not manual ones
    (which were never recorded as caused by a rule)."""
    return [ban for ban in recorded if ban.key == withdrawn]


@dataclass(frozen=True)
class ServerAcl:
    deny: tuple[str, ...]
    spared: tuple[str, ...]  # server rules not applied: they would cut off our own server


def server_acl(book: RuleBook, own_server: str) -> ServerAcl:
    """The deny list every server ban rule of every list makes, never one that matches our own
    server (that would lock the bot and the community out of their own rooms)."""
    # ACL entries are matched against server names without their port (the spec, and Synapse):
    # `example.org` denies `example.org:8448` too.
    own = without_port(own_server)
    deny: set[str] = set()
    spared: set[str] = set()
    for rule in book.rules(kind="server"):
        if not rule.is_ban:
            continue
        (spared if rule.matches(own) else deny).add(rule.entity)
    return ServerAcl(tuple(sorted(deny)), tuple(sorted(spared)))


@dataclass(frozen=True)
class AclUpdate:
    """What a list sync does to one room's server ACL: the content to write (None: the room's is
    right already) and the deny entries that are the lists' from now on (to be remembered, so the
    next sync takes back exactly those)."""

    content: dict[str, Any] | None
    written: frozenset[str]


def merge_denies(
    current: Iterable[str], written_before: Iterable[str], lists: Iterable[str]
) -> tuple[list[str], frozenset[str]]:
    """The room's deny list after a list sync, and which of its entries are the lists'.

    `(current - written_before) | lists`: what the lists wrote before and no longer deny goes;
    what room admins denied by hand stays. An entry a room admin had denied before a list named
    it stays theirs (not the lists'), so withdrawing the rule leaves it, as with bans."""
    before = frozenset(written_before)
    wanted = frozenset(lists)
    manual = {entry for entry in current if entry not in before}
    return sorted(manual | wanted), frozenset(wanted - manual)


def acl_content(
    acl: ServerAcl, current: dict[str, Any] | None, written: Iterable[str] = ()
) -> AclUpdate:
    """The `m.room.server_acl` update for one room, given what the lists `written` there before.
    `deny` keeps the room's own entries (see merge_denies); `allow` keeps the room's own list
    (everyone when it has none: the lists only ever deny, never open a room that allows only
    some servers); IP literals keep the room's setting (allowed by default). No content when the
    room's is already right, or there is nothing to deny and no ACL yet."""
    current = current or {}
    allow_ip = current.get("allow_ip_literals", True)
    allow = current.get("allow")
    if not (isinstance(allow, list) and allow and all(isinstance(a, str) for a in allow)):
        allow = ["*"]
    deny_now = current.get("deny")
    have_deny = (
        [d for d in deny_now if isinstance(d, str)] if isinstance(deny_now, list) else []
    )  # fmt: skip
    deny, owned = merge_denies(have_deny, written, acl.deny)
    if not current and not acl.deny:
        return AclUpdate(None, owned)
    wanted = {"allow": list(allow), "deny": deny, "allow_ip_literals": allow_ip is not False}
    have = {
        "allow": current.get("allow"),
        # Non-string entries (never valid) make it differ, so they are cleaned away.
        "deny": sorted(have_deny) if have_deny == deny_now else None,
        "allow_ip_literals": allow_ip is not False,
    }  # fmt: skip
    return AclUpdate(None if have == wanted else wanted, owned)
