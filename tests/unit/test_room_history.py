"""Which of a room's messages the assistant may read for a member: history visibility and the
member's membership at each event, redactions, edits, the budget. Pure rules, plain data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.commands.registry import UsageError
from bot.commands.summary import take_what
from bot.community.room_history import (
    TimelineEvent,
    after_event,
    messages,
    since,
    transcript,
    visible_to,
)

ME = "@ann:x"
BOT = "@bot:x"


class Timeline:
    """Builds a timeline in order; each event one second after the last."""

    def __init__(self) -> None:
        self.events: list[TimelineEvent] = []

    def _add(self, kind: str, sender: str, **fields) -> str:  # type: ignore[no-untyped-def]
        event_id = f"$e{len(self.events)}"
        self.events.append(TimelineEvent(event_id, sender, len(self.events) * 1000, kind, **fields))
        return event_id

    def say(self, sender: str, body: str, **fields) -> str:  # type: ignore[no-untyped-def]
        return self._add("message", sender, body=body, **fields)

    def member(self, who: str, membership: str, before: str | None) -> str:
        return self._add("member", who, target=who, membership=membership, prev_membership=before)

    def visibility(self, value: str, before: str | None) -> str:
        return self._add("visibility", "@mod:x", visibility=value, prev_visibility=before)

    def seen_by(self, member: str = ME, *, now: str = "join", visibility: str) -> list[str]:
        seen = visible_to(member, self.events, membership_now=now, visibility_now=visibility)
        return [m.text for m in messages(seen, bot_user_id=BOT, command_prefix="!")]


def test_joined_later_sees_nothing_from_before_under_joined():
    t = Timeline()
    t.visibility("joined", "shared")
    t.say("@bob:x", "before you came")
    t.member(ME, "join", None)
    t.say("@bob:x", "after you came")
    assert t.seen_by(visibility="joined") == ["after you came"]


def test_shared_history_is_there_for_members():
    t = Timeline()
    t.say("@bob:x", "before you came")
    t.member(ME, "join", None)
    t.say("@bob:x", "after you came")
    assert t.seen_by(visibility="shared") == ["before you came", "after you came"]
    # ...but not for someone who is not in the room
    assert t.seen_by("@eve:x", now="leave", visibility="shared") == []


def test_invited_sees_from_the_invitation_on():
    t = Timeline()
    t.visibility("invited", None)
    t.say("@bob:x", "long ago")
    t.member(ME, "invite", None)
    t.say("@bob:x", "while invited")
    t.member(ME, "join", "invite")
    t.say("@bob:x", "joined")
    assert t.seen_by(visibility="invited") == ["while invited", "joined"]
    assert t.seen_by(visibility="joined") == ["joined"]  # a room set to joined since


def test_the_gap_while_away_is_never_shown():
    for setting in ("joined", "invited", "shared"):
        t = Timeline()
        t.visibility(setting, None)
        t.member(ME, "join", None)
        t.say("@bob:x", "first stay")
        t.member(ME, "leave", "join")
        t.say("@bob:x", "while you were away")
        t.member(ME, "join", "leave")
        t.say("@bob:x", "back again")
        seen = t.seen_by(visibility=setting)
        assert "while you were away" not in seen, setting
        assert seen[-1] == "back again" and "first stay" in seen


def test_visibility_as_it_was_at_each_event():
    t = Timeline()
    t.say("@bob:x", "world readable then")  # world_readable before the change below
    t.visibility("joined", "world_readable")
    t.say("@bob:x", "joined only")
    t.member(ME, "join", None)
    t.say("@bob:x", "member now")
    assert t.seen_by(visibility="joined") == ["world readable then", "member now"]


def test_redacted_undecryptable_bot_and_commands_are_left_out_and_edits_apply():
    t = Timeline()
    t.member(ME, "join", None)
    t.say("@bob:x", "secret", redacted=True)
    t.say("@bob:x", "", undecryptable=True)
    t.say(BOT, "an answer of mine")
    t.say("@bob:x", "!summary 10")
    typo = t.say("@bob:x", "helo")
    t.say("@bob:x", "hello", replaces=typo)
    mine = t.say("@cat:x", "original")
    t.say("@eve:x", "forged", replaces=mine)  # only the author's own edits count
    assert t.seen_by(visibility="joined") == ["hello", "original"]


def test_selection_by_receipt_time_and_budget():
    t = Timeline()
    t.member(ME, "join", None)
    ids = [t.say("@bob:x", f"message {i}") for i in range(10)]
    readable = messages(t.events, bot_user_id=BOT)
    assert [m.text for m in after_event(readable, ids[7]) or []] == ["message 8", "message 9"]
    assert after_event(readable, "$unknown") is None
    moment = datetime.fromtimestamp(8, UTC)  # events are one second apart
    assert [m.text for m in since(readable, moment)] == ["message 7", "message 8", "message 9"]
    lines, left_out = transcript(readable, budget=12, model="stub-model")
    assert lines and lines[-1] == "@bob:x: message 9"
    assert left_out == 10 - len(lines) and left_out > 0


def test_summary_arguments():
    assert take_what([]) == (take_what([])[0], 0)
    assert take_what(["25"])[0].count == 25
    request, used = take_what(["since", "1h", "30m"])
    assert request.since is not None and request.since.total_seconds() == 5400 and used == 3
    assert take_what(["since", "2", "hours"])[0].since.total_seconds() == 7200
    assert take_what(["unread"])[0].unread
    for bad in (["since"], ["since", "soon"], ["0"], ["lots"], ["99999999"]):
        with pytest.raises(UsageError):
            take_what(bad)
