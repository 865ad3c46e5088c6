"""Reading a governed room's state (bot/matrix/access_rooms.py): memberships and power levels by
the Matrix authorization rules, room version 12's privileged creators included."""

from __future__ import annotations

from typing import Any

from bot.matrix.access_rooms import CREATOR_POWER, room_state

BOT, OWNER = "@bot:x", "@owner:x"


def create(version: str = "12", **content: Any) -> dict[str, Any]:
    return {"type": "m.room.create", "state_key": "", "sender": OWNER,
            "content": {"room_version": version, **content}}  # fmt: skip


def levels(**content: Any) -> dict[str, Any]:
    return {"type": "m.room.power_levels", "state_key": "", "sender": OWNER, "content": content}


def member(mxid: str, membership: str, sender: str | None = None) -> dict[str, Any]:
    return {"type": "m.room.member", "state_key": mxid, "sender": sender or mxid,
            "content": {"membership": membership}}  # fmt: skip


def test_memberships_and_power_from_the_power_levels_event():
    events = [
        create("10"), levels(users={BOT: 100, "@mod:x": 50}, users_default=5, kick=60, invite=10),
        member(BOT, "join"), member("@mod:x", "join"), member("@ann:x", "invite", OWNER),
        member("@left:x", "leave"), member("@kicked:x", "leave", BOT), member("@bad:x", "ban", BOT),
    ]  # fmt: skip
    state = room_state("!r:x", "Room", BOT, events)
    assert state.bot_joined and state.bot_power == 100
    assert (state.invite_level, state.kick_level) == (10, 60)
    assert state.can_invite and state.can_kick
    assert state.presence("@mod:x").power == 50 and state.presence("@ann:x").power == 5
    assert state.inside() == ["@ann:x", BOT, "@mod:x"]
    assert state.presence("@left:x").left_by_themselves
    assert not state.presence("@kicked:x").left_by_themselves
    assert state.presence("@bad:x").membership == "ban"


def test_defaults_without_power_levels_give_the_creator_100():
    state = room_state("!r:x", "Room", BOT, [create("10"), member(BOT, "join")])
    assert state.bot_power == 0 and state.kick_level == 50 and state.invite_level == 0
    assert state.can_invite and not state.can_kick
    old = create("5", creator=BOT)
    assert room_state("!r:x", "Room", BOT, [old, member(BOT, "join")]).bot_power == 100


def test_room_version_12_creators_outrank_every_power_level():
    events = [
        create("12", additional_creators=["@co:x"]), levels(users={BOT: 100}),
        member(BOT, "join"), member(OWNER, "join"), member("@co:x", "join"),
    ]  # fmt: skip
    state = room_state("!r:x", "Room", BOT, events)
    assert state.presence(OWNER).power == CREATOR_POWER
    assert state.presence("@co:x").power == CREATOR_POWER
    assert state.bot_power == 100
    # In room version 10 the creator is only what power_levels says.
    older = room_state("!r:x", "Room", BOT, [create("10"), *events[1:]])
    assert older.presence(OWNER).power == 0


def test_only_the_members_asked_about_and_the_bot_and_bad_values_are_tolerated():
    events = [
        create(), levels(users={BOT: "100", "@x:x": "lots"}, kick=None), member(BOT, "join"),
        member("@x:x", "join"), member("@y:x", "join"),
        {"type": "m.room.member", "state_key": "@z:x", "content": {"membership": 5}},
    ]  # fmt: skip
    state = room_state("!r:x", "Room", BOT, events, asked=["@x:x"])
    assert set(state.members) == {BOT, "@x:x"}
    assert state.bot_power == 100 and state.presence("@x:x").power == 0
    assert state.kick_level == 50


def test_a_bot_that_left_is_not_joined():
    state = room_state("!r:x", "Room", BOT, [create(), member(BOT, "leave")])
    assert not state.bot_joined and not state.can_invite
