"""Which rooms are whose. Two definitions that every part uses, so a login link, a member list or
a `--all` ban never lands where it should not:

- **A DM with a member** is an invite-only room (join rule `invite`, or the old `private`) that is
  not world-readable and whose members, joined or invited, are exactly the bot and that member.
  A room others could enter later by themselves (public, knock, restricted, knock_restricted) is
  never a DM, however small.
- **A community room** is a room the bot has joined that is listed in `[matrix] community_rooms`,
  or, when that list is empty, one that people can find and enter by themselves (join rule
  `public`, `knock`, `restricted` or `knock_restricted`). Never the admin room, never a DM. Every
  action over several rooms (`--all` kicks, bans and announcements, scheduled announcements to
  `all`) reaches exactly these, and moderators act only in these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from nio import AsyncClient, MatrixRoom

INVITE_ONLY = frozenset({"invite", "private"})
OPEN_TO_JOIN = frozenset({"public", "knock", "restricted", "knock_restricted"})


def is_private_pair(room: MatrixRoom, bot_user_id: str, member: str) -> bool:
    """The room is a DM between the bot and `member` (see the module's definition)."""
    if room.join_rule not in INVITE_ONLY or room.history_visibility == "world_readable":
        return False
    others = set(room.users) - {bot_user_id}
    return others == {member} and room.member_count <= 2


class RoomKinds:
    def __init__(
        self,
        client: AsyncClient,
        *,
        community_rooms: Iterable[str] = (),
        admin_room_id: str | None = None,
    ) -> None:
        self._client = client
        self._listed = frozenset(community_rooms)  # room ids, resolved from the config at start
        self.admin_room_id = admin_room_id
        self._retired: set[str] = set()  # replaced by an upgrade: no longer a community room
        # Rooms that are never community rooms though open to join (the ban lists followed).
        self.set_apart: Callable[[str], bool] = lambda _room_id: False

    def follow_upgrade(self, old: str, new: str) -> None:
        """`old` was upgraded to `new`: the new room takes its place (see room_upgrades.py)."""
        self._retired.add(old)
        self._retired.discard(new)
        if old in self._listed:
            self._listed = (self._listed - {old}) | {new}

    def is_dm(self, room_id: str, member: str) -> bool:
        room = self._client.rooms.get(room_id)
        return room is not None and is_private_pair(room, self._client.user_id, member)

    def is_community(self, room_id: str) -> bool:
        room = self._client.rooms.get(room_id)
        if room is None or room_id == self.admin_room_id or room_id in self._retired:
            return False
        if self.set_apart(room_id):
            return False
        if self._client.user_id not in room.users or self._client.user_id in room.invited_users:
            return False  # left, kicked or only invited: nio keeps such rooms in its list
        if self._listed:
            return room_id in self._listed
        return room.join_rule in OPEN_TO_JOIN

    def community_rooms(self) -> list[str]:
        return sorted(room_id for room_id in self._client.rooms if self.is_community(room_id))
