"""Which rooms are community rooms: open-to-join rooms the bot is in, never the admin room, never
a ban list it follows (a public policy room looks like a community room otherwise)."""

from __future__ import annotations

from types import SimpleNamespace

from nio import MatrixRoom

from bot.matrix.room_kinds import RoomKinds

BOT = "@bot:x"


def room(room_id: str, join_rule: str) -> MatrixRoom:
    made = MatrixRoom(room_id, BOT)
    made.join_rule = join_rule
    made.add_member(BOT, "bot", None)
    made.add_member("@ann:x", "ann", None)
    return made


def kinds(*rooms: MatrixRoom, **options: object) -> RoomKinds:
    client = SimpleNamespace(user_id=BOT, rooms={r.room_id: r for r in rooms})
    return RoomKinds(client, **options)  # type: ignore[arg-type]


def test_open_rooms_are_community_rooms_but_not_the_admin_room_nor_a_followed_list() -> None:
    made = kinds(
        room("!pub:x", "public"), room("!list:x", "public"), room("!adm:x", "public"),
        room("!dm:x", "invite"), admin_room_id="!adm:x",
    )  # fmt: skip
    assert made.community_rooms() == ["!list:x", "!pub:x"]
    made.set_apart = {"!list:x"}.__contains__  # the ban lists the bot follows
    assert made.community_rooms() == ["!pub:x"]
    assert not made.is_community("!list:x") and made.is_community("!pub:x")


def test_an_upgraded_room_hands_its_place_to_the_new_one() -> None:
    made = kinds(room("!old:x", "public"), room("!new:x", "public"), community_rooms=["!old:x"])
    assert made.community_rooms() == ["!old:x"]
    made.follow_upgrade("!old:x", "!new:x")
    assert made.community_rooms() == ["!new:x"]
