"""Group-gated rooms, the pure part: who belongs in a governed room (the policy), and what to do
about each member of it (the plan). Nothing here reads the store or talks to Matrix: the service
(access_service.py) reads members' standing from the store, the Matrix side says who is in each
room, and both come here as plain data.

The policy: a member belongs in a room listed in `[[access.rooms]]` when one of the groups of
their confirmed (not stale) bindings is among the room's `groups`, or their role is among its
`roles`. A plan per room then says whom to invite, whom to remove (a kick, never a ban) and whom
to keep, and what should change but cannot (the bot lacks the power, the member outranks it, the
member is banned there)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from bot.community.roles import Role
from bot.config import AccessRoom

JOIN, INVITE, LEAVE, BAN, KNOCK = "join", "invite", "leave", "ban", "knock"
INSIDE = frozenset({JOIN, INVITE})  # what "in the room" means here: joined or invited

# Why a change the policy asks for is not made (our words, shown to moderators).
NO_INVITE_POWER = "I lack the power to invite there"
NO_KICK_POWER = "I lack the power to remove members there"
OUTRANKS_ME = "their power level there is not below mine"
BANNED = "banned there, so not invited"


@dataclass(frozen=True)
class GatedRoom:
    """One `[[access.rooms]]` entry: the room as configured (id or alias) and who belongs in it."""

    room: str
    groups: frozenset[str] = frozenset()
    roles: frozenset[Role] = frozenset()

    @classmethod
    def from_config(cls, entry: AccessRoom) -> GatedRoom:
        return cls(
            entry.room, frozenset(entry.groups), frozenset(Role.parse(r) for r in entry.roles)
        )

    def grounds(self, member: Standing) -> list[str]:
        """Why `member` belongs here (`group staff`, `role admin`); empty: they do not."""
        reasons = [f"group {g}" for g in sorted(self.groups & member.groups)]
        if member.role in self.roles:
            reasons.append(f"role {member.role.label}")
        return reasons

    def admits(self, member: Standing) -> bool:
        return bool(self.groups & member.groups) or member.role in self.roles


@dataclass(frozen=True)
class Standing:
    """What entitles a member: the groups of their confirmed bindings, and their role."""

    mxid: str
    groups: frozenset[str] = frozenset()
    role: Role = Role.USER


class Standings:
    """Members' standing by Matrix ID; whoever the store does not know is a user without groups
    (and the configured admins are admins, known or not)."""

    def __init__(self, known: Mapping[str, Standing], admins: Iterable[str] = ()) -> None:
        self._known = dict(known)
        self._admins = frozenset(admins)

    def __getitem__(self, mxid: str) -> Standing:
        standing = self._known.get(mxid) or Standing(mxid)
        if mxid in self._admins and standing.role is not Role.ADMIN:
            return Standing(mxid, standing.groups, Role.ADMIN)
        return standing

    def members(self) -> list[str]:
        """Everyone the community knows, the configured admins included: whom a sync may invite."""
        return sorted(self._known.keys() | self._admins)


@dataclass(frozen=True)
class Presence:
    """One member as the room's state shows them."""

    membership: str  # join, invite, leave, ban or knock
    power: int = 0
    left_by_themselves: bool = False  # a leave they did (left, declined the invite): not a kick


@dataclass(frozen=True)
class RoomState:
    """A governed room as the homeserver shows it: its members (all of them, or only those asked
    about) with their power, and the bot's own power there."""

    room_id: str
    name: str
    members: Mapping[str, Presence]
    bot_joined: bool
    bot_power: int
    invite_level: int = 0
    kick_level: int = 50

    @property
    def can_invite(self) -> bool:
        return self.bot_joined and self.bot_power >= self.invite_level

    @property
    def can_kick(self) -> bool:
        return self.bot_joined and self.bot_power >= self.kick_level

    def presence(self, mxid: str) -> Presence | None:
        return self.members.get(mxid)

    def inside(self) -> list[str]:
        return sorted(m for m, p in self.members.items() if p.membership in INSIDE)


@dataclass(frozen=True)
class Held:
    """A change the policy asks for that will not be made, and why."""

    member: str
    why: str


@dataclass(frozen=True)
class RoomPlan:
    """What to do in one governed room. `problem` set: the room could not be looked at (not
    resolvable, the bot is not in it) and nothing else is known."""

    room: GatedRoom
    room_id: str | None
    name: str
    invite: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()  # belong there and are in (joined or invited)
    held: tuple[Held, ...] = ()
    # Belong there but left (or declined) by themselves: a sync does not invite them again.
    declined: tuple[str, ...] = ()
    problem: str | None = None
    transient: bool = False  # the problem is the homeserver not answering: it may go away
    states: Mapping[str, str] = field(default_factory=dict)  # member -> membership, as looked at

    @property
    def changes(self) -> int:
        return len(self.invite) + len(self.remove)

    @property
    def troubled(self) -> bool:
        return self.problem is not None or bool(self.held)


def unreachable(
    room: GatedRoom, problem: str, room_id: str | None = None, *, transient: bool = False
) -> RoomPlan:
    """The plan of a room the bot cannot look at: only the problem, said."""
    return RoomPlan(room, room_id, room.room, problem=problem, transient=transient)


def plan_room(
    room: GatedRoom,
    state: RoomState,
    standings: Standings,
    *,
    bot_user_id: str,
    invitees: Iterable[str],
    removable: Collection[str] | None = None,
    invite_leavers: bool = True,
) -> RoomPlan:
    """What to do in `room` given its `state`.

    `invitees`: who may be invited when they belong (one member, or everyone the community knows).
    `removable`: who may be removed when they do not belong (None: everyone in the room).
    `invite_leavers`: invite again those who belong but left or declined by themselves (yes for
    the member whose standing just changed, no for a sync: it would nag them every time).
    Nobody is ever removed who is not in the room, nor the bot itself."""
    invite: list[str] = []
    remove: list[str] = []
    keep: list[str] = []
    held: list[Held] = []
    declined: list[str] = []
    for mxid in dict.fromkeys(invitees):
        if mxid == bot_user_id or not room.admits(standings[mxid]):
            continue
        presence = state.presence(mxid)
        membership = presence.membership if presence else None
        if membership in INSIDE:
            keep.append(mxid)
        elif membership == BAN:
            held.append(Held(mxid, BANNED))
        elif (
            membership == LEAVE and presence and presence.left_by_themselves and not invite_leavers
        ):
            declined.append(mxid)
        elif not state.can_invite:
            held.append(Held(mxid, NO_INVITE_POWER))
        else:
            invite.append(mxid)
    candidates = state.inside() if removable is None else sorted(removable)
    for mxid in candidates:
        presence = state.presence(mxid)
        if mxid == bot_user_id or presence is None or presence.membership not in INSIDE:
            continue
        if room.admits(standings[mxid]):
            if mxid not in keep:
                keep.append(mxid)
            continue
        if not state.can_kick:
            held.append(Held(mxid, NO_KICK_POWER))
        elif presence.power >= state.bot_power:
            held.append(Held(mxid, OUTRANKS_ME))
        else:
            remove.append(mxid)
    return RoomPlan(
        room, state.room_id, state.name, tuple(invite), tuple(remove), tuple(keep), tuple(held),
        tuple(declined), None, False, {m: p.membership for m, p in state.members.items()},
    )  # fmt: skip
