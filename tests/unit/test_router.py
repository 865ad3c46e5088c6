"""The router decides what a message is for the bot, without Matrix: commands, assistant turns,
thread follow-ups, edits, or nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot.matrix.router import (
    IGNORE,
    Chat,
    Command,
    Edit,
    ThreadFollowUp,
    is_arrival,
    route,
    since_join,
)

BOT = "@bot:example.org"
KNOWN = {"ping", "help", "kick"}


def decide(body, *, direct=False, assistant=True, **content):  # type: ignore[no-untyped-def]
    return route(
        {"body": body, **content}, prefix="!", bot_user_id=BOT, bot_display_name="Bot",
        is_direct=direct, is_command=KNOWN.__contains__, assistant=assistant,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "direct", "expected"),
    [
        ("!ping", False, Command("ping")),
        ("!nosuch thing", False, Command("nosuch thing")),  # prefixed: the executor explains
        ("Bot: help kick", False, Command("help kick")),  # a mention, then a command word
        ("Bot: what is Matrix?", False, Chat("what is Matrix?")),
        ("what is Matrix?", True, Chat("what is Matrix?")),  # a DM needs no prefix
        ("Bot:", True, Chat("Bot:")),  # a bare mention in a DM is still a turn
        ("Bot:", False, IGNORE),  # in a room it says nothing
        ("just talking", False, IGNORE),
    ],
)
def test_what_a_message_is(body, direct, expected):
    assert decide(body, direct=direct) == expected


def test_without_an_assistant_only_commands_count():
    assert decide("Bot: what is Matrix?", assistant=False) == IGNORE
    assert decide("hello", direct=True, assistant=False) == IGNORE
    assert decide("Bot: ping", assistant=False) == Command("ping")


def test_a_thread_message_may_continue_the_assistant():
    thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}
    assert decide("and then?", **thread) == ThreadFollowUp("and then?", "$root")
    assert decide("and then?", assistant=False, **thread) == IGNORE


def test_edits_are_recognised_and_malformed_ones_ignored():
    edit = {"m.relates_to": {"rel_type": "m.replace", "event_id": "$old"}}
    assert decide("* new", **edit, **{"m.new_content": {"body": "new"}}) == Edit("$old", "new")
    assert decide("* new", **edit, **{"m.new_content": {"body": 42}}) == IGNORE
    assert decide("* !ping", **edit, **{"m.new_content": {"body": "!ping"}}) == Edit(
        "$old", "!ping"
    )
    assert decide("* new", assistant=False, **edit, **{"m.new_content": {"body": "x"}}) == IGNORE


def test_odd_shapes_are_ignored():
    assert route({"body": 12}, prefix="!", bot_user_id=BOT, bot_display_name=None,
                 is_direct=True, is_command=KNOWN.__contains__, assistant=True) == IGNORE  # fmt: skip
    assert decide("!ping", **{"m.relates_to": "nonsense"}) == Command("ping")


def test_pills_in_commands_become_mxids():
    decided = decide(
        "!kick Bob Smith rude",
        format="org.matrix.custom.html",
        formatted_body='!kick <a href="https://matrix.to/#/@bob:example.org">Bob Smith</a> rude',
    )
    assert decided == Command("kick @bob:example.org rude")


def member(state_key, membership, prev=None):  # type: ignore[no-untyped-def]
    return SimpleNamespace(state_key=state_key, membership=membership, prev_membership=prev)


def test_history_before_the_bots_own_join_is_not_for_it():
    old, joined, new = SimpleNamespace(), member(BOT, "join", "invite"), SimpleNamespace()
    assert since_join([old, joined, new], BOT) == [new]
    assert since_join([old, new], BOT) == [old, new]
    assert since_join([old, member(BOT, "join", "join"), new], BOT) == [
        old,
        member(BOT, "join", "join"),
        new,
    ]


def test_arrivals_are_real_joins_of_others():
    assert is_arrival(member("@ann:x", "join", "invite"), BOT)
    assert not is_arrival(member("@ann:x", "join", "join"), BOT)  # a profile change
    assert not is_arrival(member(BOT, "join", "invite"), BOT)
    assert not is_arrival(member("@ann:x", "leave", "join"), BOT)
