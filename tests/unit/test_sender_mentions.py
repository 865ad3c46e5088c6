"""An empty m.mentions is left out in a room of two (it doubles Synapse's push-rule work for
nothing there) and kept everywhere else."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from nio import MatrixRoom

from bot.matrix.render import message_content
from bot.matrix.sender import Sender


def room_of(*members: str, invited: tuple[str, ...] = ()) -> MatrixRoom:
    room = MatrixRoom("!r:x", "@bot:x")
    for member in members:
        room.add_member(member, None, None)
    for member in invited:
        room.add_member(member, None, None, invited=True)
    return room


class Recorder(Sender):
    def __init__(self, rooms: dict[str, MatrixRoom]) -> None:
        super().__init__(SimpleNamespace(rooms=rooms, olm=None))  # type: ignore[arg-type]
        self.sent: list[dict[str, Any]] = []

    async def _send_with_retry(self, room_id, event_type, content, txn_id):  # type: ignore[no-untyped-def]
        self.sent.append(content)
        return "$e"


async def test_an_empty_mentions_is_left_out_only_in_a_room_of_two():
    rooms = {
        "!dm": room_of("@bot:x", "@alice:x"),
        "!invited": room_of("@bot:x", invited=("@alice:x",)),
        "!three": room_of("@bot:x", "@alice:x", "@bob:x"),
        "!two-and-invited": room_of("@bot:x", "@alice:x", invited=("@bob:x",)),
    }
    sender = Recorder(rooms)
    plain = message_content("Pong! @room Alice")
    for room_id in (*rooms, "!unknown"):
        await sender.send(room_id, plain)
    dm, invited, three, two_and_invited, unknown = sender.sent
    assert "m.mentions" not in dm and "m.mentions" not in invited
    for content in (three, two_and_invited, unknown):
        assert content["m.mentions"] == {}  # nobody: no inferred mention, no @room
    assert plain["m.mentions"] == {}  # the caller's content is not changed

    named = message_content("hi", mentions=["@alice:x"])
    await sender.send("!dm", named)
    assert sender.sent[-1]["m.mentions"] == {"user_ids": ["@alice:x"]}  # real mentions stay
