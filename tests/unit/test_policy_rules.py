"""Policy rules: parsing the events Draupnir and Mjolnir publish, and the pure decisions."""

from __future__ import annotations

import pytest

from bot.community.policy_rules import (
    AclUpdate,
    RecordedBan,
    RuleBook,
    RuleKey,
    acl_content,
    ban_for_member,
    bans_for,
    bans_to_lift,
    merge_denies,
    parse_rule,
    rule_kind,
    server_acl,
)

LIST = "!list:example.org"


def rule(kind: str, entity: str, *, key: str | None = None, recommendation: str = "m.ban",
         event_id: str = ""):  # fmt: skip
    parsed = parse_rule(
        LIST, f"m.policy.rule.{kind}", key or f"rule:{entity}",
        {"entity": entity, "recommendation": recommendation, "reason": "spam"},
        event_id=event_id,
    )  # fmt: skip
    assert parsed is not None and parsed[1] is not None
    return parsed[1]


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("m.policy.rule.user", "user"),
        ("m.policy.rule.server", "server"),
        ("m.policy.rule.room", "room"),
        ("m.room.rule.user", "user"),  # before MSC2313 settled
        ("org.matrix.mjolnir.rule.server", "server"),  # Mjolnir's own
        ("m.policy.rule.alien", None),
        ("m.room.member", None),
    ],
)
def test_rule_kinds_stable_and_legacy(event_type, kind):
    assert rule_kind(event_type) == kind


def test_parse_a_rule_and_its_withdrawal():
    key, parsed = parse_rule(
        LIST, "m.policy.rule.user", "rule:@spam:evil.org",
        {"entity": "@spam:evil.org", "recommendation": "m.ban", "reason": "spam"},
        sender="@mod:example.org", event_id="$1",
    )  # fmt: skip
    assert key == RuleKey(LIST, "user", "rule:@spam:evil.org")
    assert parsed is not None and parsed.is_ban and parsed.reason == "spam"
    assert parsed.sender == "@mod:example.org" and parsed.event_id == "$1"
    # Withdrawn: the same state key with empty content (or redacted: no entity left).
    assert parse_rule(LIST, "m.policy.rule.user", "rule:@spam:evil.org", {}) == (key, None)
    assert parse_rule(LIST, "m.policy.rule.user", "rule:@spam:evil.org", None) == (key, None)


def test_legacy_ban_recommendation_and_others():
    assert rule("user", "@a:x", recommendation="org.matrix.mjolnir.ban").is_ban
    assert not rule("user", "@a:x", recommendation="m.takedown.or.something").is_ban


@pytest.mark.parametrize(
    "content",
    [
        {"entity": 42, "recommendation": "m.ban"},
        {"entity": "", "recommendation": "m.ban"},
        {"recommendation": "m.ban"},
        {"entity": "@a:x"},
        {"entity": "@a:x", "recommendation": ["m.ban"]},
        {"entity": "*" * 5000, "recommendation": "m.ban"},
        "not even an object",
    ],
)
def test_malformed_rules_are_no_rules(content):
    key, parsed = parse_rule(LIST, "m.policy.rule.user", "k", content)
    assert parsed is None and key.state_key == "k"


def test_not_policy_events_are_ignored():
    assert parse_rule(LIST, "m.room.message", "", {"entity": "x"}) is None
    assert parse_rule(LIST, "m.policy.rule.user", None, {"entity": "x"}) is None


def test_a_user_rule_bans_exactly_the_matching_members():
    members = {
        "!a": {"@spam1:evil.org", "@alice:good.org", "@bot:good.org"},
        "!b": {"@spam2:evil.org", "@bob:good.org"},
    }
    decisions = bans_for(rule("user", "@spam*:evil.org"), members, exempt=["@bot:good.org"])
    assert {(d.room_id, d.mxid) for d in decisions} == {
        ("!a", "@spam1:evil.org"), ("!b", "@spam2:evil.org"),
    }  # fmt: skip
    assert bans_for(rule("user", "@*:*", recommendation="m.mute"), members) == []
    assert bans_for(rule("server", "evil.org"), members) == []  # servers: the ACL's job


def test_a_member_arriving_meets_the_rules():
    book = RuleBook()
    spam = rule("user", "@spam?:evil.org")
    book.put(spam.key, spam)
    assert ban_for_member(book, "!a", "@spam1:evil.org").rule == spam  # type: ignore[union-attr]
    assert ban_for_member(book, "!a", "@spam12:evil.org") is None
    assert ban_for_member(book, "!a", "@spam1:evil.org", exempt=["@spam1:evil.org"]) is None


def test_a_withdrawn_rule_lifts_exactly_its_bans():
    glob = RuleKey(LIST, "user", "rule:@spam*:evil.org")
    exact = RuleKey(LIST, "user", "rule:@troll:evil.org")
    other_list = RuleKey("!other:x", "user", "rule:@spam*:evil.org")
    recorded = [
        RecordedBan("!a", "@spam1:evil.org", glob),
        RecordedBan("!b", "@spam1:evil.org", glob),
        RecordedBan("!a", "@troll:evil.org", exact),
        RecordedBan("!c", "@spam9:evil.org", other_list),  # same entity, another list's rule
    ]
    # A manual ban of @spam2 in !a was never recorded: nothing can lift it.
    assert bans_to_lift(glob, recorded) == recorded[:2]
    assert bans_to_lift(exact, recorded) == [recorded[2]]
    assert bans_to_lift(RuleKey(LIST, "server", "rule:@spam*:evil.org"), recorded) == []


def test_rulebook_tracks_events_for_redactions():
    book = RuleBook()
    first = rule("user", "@a:x", event_id="$1")
    book.put(first.key, first)
    assert book.key_of_event("$1") == first.key
    replaced = rule("user", "@a:x", event_id="$2")
    assert book.put(first.key, replaced) == first
    assert book.key_of_event("$1") is None and book.key_of_event("$2") == first.key
    assert book.put(first.key, None) == replaced and len(book) == 0


def test_server_acl_never_bans_our_own_server():
    book = RuleBook()
    for entity in ("evil.org", "*.spam.net", "*.org", "Example.ORG"):
        r = rule("server", entity)
        book.put(r.key, r)
    muted = rule("server", "meh.net", recommendation="m.mute")
    book.put(muted.key, muted)
    acl = server_acl(book, "example.org")
    assert acl.deny == ("*.spam.net", "evil.org")
    assert acl.spared == ("*.org", "Example.ORG")  # would cut off example.org itself


def test_our_own_server_is_spared_whatever_port_its_user_ids_carry():
    """ACLs match server names without their port: a rule for `example.org` would cut off a bot
    whose id is `@bot:example.org:8448`, so it is spared, not denied."""
    book = RuleBook()
    for entity in ("example.org", "evil.org", "[::1]"):
        r = rule("server", entity)
        book.put(r.key, r)
    acl = server_acl(book, "example.org:8448")
    assert acl.deny == ("[::1]", "evil.org")
    assert acl.spared == ("example.org",)
    assert server_acl(book, "[::1]:8448").spared == ("[::1]",)


def test_the_rooms_own_allow_list_is_kept():
    """The lists only deny: a room that allows only some servers is never opened to all."""
    book = RuleBook()
    r = rule("server", "evil.org")
    book.put(r.key, r)
    acl = server_acl(book, "example.org")
    current = {"allow": ["example.org", "friends.net"], "deny": [], "allow_ip_literals": False}
    assert acl_content(acl, current).content == {**current, "deny": ["evil.org"]}
    assert acl_content(acl, {**current, "deny": ["evil.org"]}, {"evil.org"}).content is None


def test_acl_content_written_only_when_it_changes():
    book = RuleBook()
    acl = server_acl(book, "example.org")
    assert acl_content(acl, None).content is None  # nothing to deny and no ACL yet: leave it
    r = rule("server", "evil.org")
    book.put(r.key, r)
    acl = server_acl(book, "example.org")
    wanted = {"allow": ["*"], "deny": ["evil.org"], "allow_ip_literals": True}
    first = acl_content(acl, None)
    assert first.content == wanted and first.written == {"evil.org"}
    assert acl_content(acl, wanted, first.written) == AclUpdate(None, first.written)
    # The room's own choice about IP literals is kept.
    assert acl_content(acl, {**wanted, "allow_ip_literals": False}, {"evil.org"}).content is None
    assert acl_content(acl, {"allow": ["*"], "deny": [], "allow_ip_literals": False}).content == {
        **wanted, "allow_ip_literals": False,
    }  # fmt: skip
    # The rule withdrawn: the ACL empties its deny list (but keeps allowing everyone).
    book.put(r.key, None)
    gone = acl_content(server_acl(book, "example.org"), wanted, {"evil.org"})
    assert gone.content == {**wanted, "deny": []} and gone.written == frozenset()


def test_a_list_sync_takes_back_only_what_the_lists_wrote():
    """Issue 12: lifting affects exactly what the lists caused. A deny a room admin added by hand
    survives a sync and a withdrawn rule; so does one the admin had before a list named it."""
    assert merge_denies([], [], ["evil.org"]) == (["evil.org"], {"evil.org"})
    # An admin adds a deny by hand; the lists add another: both are there, one is the lists'.
    deny, written = merge_denies(["evil.org", "mine.net"], {"evil.org"}, ["evil.org", "bad.net"])
    assert deny == ["bad.net", "evil.org", "mine.net"] and written == {"bad.net", "evil.org"}
    # A rule withdrawn: only its deny goes.
    deny, written = merge_denies(deny, written, ["bad.net"])
    assert deny == ["bad.net", "mine.net"] and written == {"bad.net"}
    # The admin had denied `also.org` before a list named it: it stays theirs.
    deny, written = merge_denies([*deny, "also.org"], written, ["bad.net", "also.org"])
    assert deny == ["also.org", "bad.net", "mine.net"] and written == {"bad.net"}
    deny, written = merge_denies(deny, written, [])
    assert deny == ["also.org", "mine.net"] and written == frozenset()
    # The same through acl_content, on a room that allows only some servers.
    book = RuleBook()
    r = rule("server", "evil.org")
    book.put(r.key, r)
    current = {"allow": ["example.org"], "deny": ["mine.net"], "allow_ip_literals": True}
    update = acl_content(server_acl(book, "example.org"), current, ())
    assert update.content == {**current, "deny": ["evil.org", "mine.net"]}
    book.put(r.key, None)
    lifted = acl_content(server_acl(book, "example.org"), update.content, update.written)
    assert lifted.content == current and lifted.written == frozenset()
    # Junk in the room's deny list is not kept.
    junk = acl_content(server_acl(book, "example.org"), {**current, "deny": ["mine.net", 7]})
    assert junk.content == current


def test_checking_an_arrival_against_thousands_of_rules_is_fast():
    import time

    book = RuleBook()
    for i in range(20_000):
        r = rule("user", f"@spammer{i}:evil.org")
        book.put(r.key, r)
    for i in range(200):
        r = rule("user", f"@bot{i}-*:evil.org")
        book.put(r.key, r)
    assert ban_for_member(book, "!a", "@spammer19999:evil.org") is not None
    started = time.perf_counter()
    for i in range(1_000):
        assert ban_for_member(book, "!a", f"@member{i}:good.org") is None
    assert time.perf_counter() - started < 1.0


def test_an_invite_is_refused_for_a_banned_room_inviter_or_server():
    book = RuleBook()
    for r in (rule("room", "!bad*:example.org"), rule("user", "@spammer:x.org"),
              rule("server", "evil.example"), rule("room", "!fine:example.org",
              recommendation="m.no_such_thing")):  # fmt: skip
        book.put(r.key, r)
    assert book.invite_ban("!badroom:example.org", "@ann:ok.org").entity == "!bad*:example.org"
    assert book.invite_ban("!room:example.org", "@spammer:x.org").entity == "@spammer:x.org"
    found = book.invite_ban("!room:example.org", "@troll:evil.example:8448")  # port ignored
    assert found is not None and found.entity == "evil.example"
    assert book.invite_ban("!fine:example.org", "@ann:ok.org") is None  # not a ban rule
    assert book.invite_ban("!room:example.org", "@ann:ok.org") is None
