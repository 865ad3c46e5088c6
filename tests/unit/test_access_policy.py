"""Group-gated rooms, the pure part (bot/community/access.py): who belongs, and the plan per room."""

from __future__ import annotations

from bot.community.access import (
    BANNED,
    NO_INVITE_POWER,
    NO_KICK_POWER,
    OUTRANKS_ME,
    GatedRoom,
    Held,
    Presence,
    RoomState,
    Standing,
    Standings,
    plan_room,
)
from bot.community.roles import Role
from bot.config import AccessRoom

BOT = "@bot:x"
STAFF = GatedRoom("#staff:x", groups=frozenset({"staff", "board"}))
MODS = GatedRoom("#mods:x", roles=frozenset({Role.MODERATOR, Role.ADMIN}))

ANN = Standing("@ann:x", frozenset({"staff"}))
BOB = Standing("@bob:x", frozenset({"devs"}))
MOD = Standing("@mod:x", role=Role.MODERATOR)
STANDINGS = Standings({s.mxid: s for s in (ANN, BOB, MOD)}, admins=["@root:x"])


def state(members: dict[str, Presence], **power: int) -> RoomState:
    power.setdefault("bot_power", 100)
    return RoomState("!r:x", "Staff", {BOT: Presence("join", 100), **members}, True, **power)


def test_a_member_belongs_by_any_listed_group_or_role():
    assert STAFF.admits(ANN) and not STAFF.admits(BOB)
    assert MODS.admits(MOD) and not MODS.admits(ANN)
    assert STAFF.grounds(Standing("@x:x", frozenset({"board", "staff", "devs"}))) == [
        "group board",
        "group staff",
    ]
    assert MODS.grounds(MOD) == ["role moderator"]


def test_standings_default_to_a_user_without_groups_and_configured_admins_are_admins():
    assert STANDINGS["@stranger:x"] == Standing("@stranger:x")
    assert STANDINGS["@root:x"].role is Role.ADMIN and MODS.admits(STANDINGS["@root:x"])
    assert STANDINGS.members() == ["@ann:x", "@bob:x", "@mod:x", "@root:x"]


def test_config_entries_become_gated_rooms():
    entry = AccessRoom(room="#staff:x", groups=("staff",), roles=("admin",))
    assert GatedRoom.from_config(entry) == GatedRoom(
        "#staff:x", frozenset({"staff"}), frozenset({Role.ADMIN})
    )


def test_one_member_invited_when_they_belong_removed_when_they_do_not():
    empty = state({})
    plan = plan_room(STAFF, empty, STANDINGS, bot_user_id=BOT, invitees=[ANN.mxid],
                     removable=[ANN.mxid])  # fmt: skip
    assert plan.invite == (ANN.mxid,) and not plan.remove and not plan.held
    inside = state({BOB.mxid: Presence("join"), ANN.mxid: Presence("invite")})
    # Only the member asked about is touched, even though someone else does not belong.
    plan = plan_room(STAFF, inside, STANDINGS, bot_user_id=BOT, invitees=[ANN.mxid],
                     removable=[ANN.mxid])  # fmt: skip
    assert plan.keep == (ANN.mxid,) and not plan.invite and not plan.remove
    plan = plan_room(STAFF, inside, STANDINGS, bot_user_id=BOT, invitees=[BOB.mxid],
                     removable=[BOB.mxid])  # fmt: skip
    assert plan.remove == (BOB.mxid,) and not plan.invite


def test_a_sync_removes_everyone_inside_who_does_not_belong_but_never_the_bot():
    room = state({
        ANN.mxid: Presence("join"), BOB.mxid: Presence("join"),
        "@stranger:y": Presence("invite"), "@gone:x": Presence("leave"),
    })  # fmt: skip
    plan = plan_room(STAFF, room, STANDINGS, bot_user_id=BOT, invitees=STANDINGS.members())
    assert plan.remove == (BOB.mxid, "@stranger:y")
    assert plan.keep == (ANN.mxid,) and not plan.invite
    assert plan.states[BOB.mxid] == "join"


def test_who_cannot_be_removed_or_invited_is_held_with_the_reason():
    room = state({
        BOB.mxid: Presence("join", power=100), "@peer:x": Presence("join", power=50),
        "@low:x": Presence("join", power=10),
    }, bot_power=50)  # fmt: skip
    plan = plan_room(STAFF, room, STANDINGS, bot_user_id=BOT, invitees=[])
    assert plan.remove == ("@low:x",)
    assert set(plan.held) == {Held(BOB.mxid, OUTRANKS_ME), Held("@peer:x", OUTRANKS_ME)}

    weak = state({BOB.mxid: Presence("join")}, bot_power=10, invite_level=50)
    plan = plan_room(STAFF, weak, STANDINGS, bot_user_id=BOT, invitees=[ANN.mxid])
    assert not plan.invite and not plan.remove
    assert set(plan.held) == {Held(ANN.mxid, NO_INVITE_POWER), Held(BOB.mxid, NO_KICK_POWER)}
    assert plan.troubled


def test_banned_members_are_not_invited_and_leavers_only_when_their_standing_changed():
    room = state({
        ANN.mxid: Presence("ban"), "@left:x": Presence("leave", left_by_themselves=True),
        "@kicked:x": Presence("leave", left_by_themselves=False),
    })  # fmt: skip
    more = Standings({
        ANN.mxid: ANN, "@left:x": Standing("@left:x", frozenset({"staff"})),
        "@kicked:x": Standing("@kicked:x", frozenset({"staff"})),
    })  # fmt: skip
    sync = plan_room(STAFF, room, more, bot_user_id=BOT, invitees=more.members(),
                     invite_leavers=False)  # fmt: skip
    assert sync.invite == ("@kicked:x",) and sync.declined == ("@left:x",)
    assert sync.held == (Held(ANN.mxid, BANNED),)
    member = plan_room(STAFF, room, more, bot_user_id=BOT, invitees=["@left:x"],
                       removable=["@left:x"])  # fmt: skip
    assert member.invite == ("@left:x",)


def test_the_bot_is_neither_invited_nor_removed_whatever_its_standing():
    room = state({})
    everyone = GatedRoom("#all:x", roles=frozenset({Role.USER}))
    plan = plan_room(everyone, room, STANDINGS, bot_user_id=BOT, invitees=[BOT, BOB.mxid])
    assert plan.invite == (BOB.mxid,)
    plan = plan_room(STAFF, room, STANDINGS, bot_user_id=BOT, invitees=[], removable=[BOT])
    assert not plan.remove and not plan.held


def test_a_room_where_the_bot_is_not_joined_can_neither_invite_nor_kick():
    room = RoomState("!r:x", "Staff", {BOB.mxid: Presence("join")}, bot_joined=False, bot_power=100)
    assert not room.can_invite and not room.can_kick
