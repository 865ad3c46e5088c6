"""Every protection's counting and thresholds, the escalation ladder, the settings moderators
set, and the service's batching, exemptions and dry run, without Matrix (fakes for the room
actions and the store)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.community.protection_counters import Offences, step
from bot.community.protection_rules import Observation, ProtectionRules
from bot.community.protection_settings import (
    CommunityProtections,
    SettingError,
    parse_value,
    show_value,
)
from bot.community.protections import ProtectionService
from bot.community.roles import Role
from bot.metrics import Metrics

ROOM = "!room:x"


def settings(**overrides: dict[str, Any]):
    return CommunityProtections.defaults().for_room(overrides)


def message(sender: str = "@a:x", event: str = "$1", **fields: Any) -> Observation:
    return Observation(ROOM, sender, event, "message", **fields)


# -- flood ---------------------------------------------------------------------------------------


def test_flood_triggers_on_the_message_over_the_limit_within_the_window():
    rules, room = ProtectionRules(), settings(flood={"max_messages": 3, "window": 10})
    decisions = [rules.observe(message(event=f"$m{i}"), room, now=i * 0.5) for i in range(4)]
    assert decisions[:3] == [[], [], []]
    [flood] = decisions[3]
    assert (flood.protection, flood.action, flood.offence) == ("flood", "warn", 1)
    assert flood.redact == ("$m3",)  # only what went over the limit
    assert "more than 3 messages in 10 s" in flood.reason


def test_flood_window_slides_and_members_are_counted_apart():
    rules, room = ProtectionRules(), settings(flood={"max_messages": 3, "window": 10})
    # One message every 4 s never has more than 3 in 10 s.
    assert all(not rules.observe(message(event=f"$m{i}"), room, now=i * 4) for i in range(20))
    # Three members with three messages each at once: nobody is over.
    for who in ("@a:x", "@b:x", "@c:x"):
        assert all(not rules.observe(message(who, f"{who}{i}"), room, 100) for i in range(3))


def test_flood_escalates_warn_then_mute_and_needs_a_new_run_each_time():
    rules, room = ProtectionRules(), settings(flood={"max_messages": 2, "window": 10})
    actions = []
    for i in range(9):
        for decision in rules.observe(message(event=f"$m{i}"), room, now=i * 0.1):
            actions.append(decision.action)
    # Over the limit at the 3rd, counting starts again, over again at the 6th, and the 9th.
    assert actions == ["warn", "mute", "mute"]


def test_offences_are_forgotten_after_the_escalation_memory():
    offences = Offences()
    assert offences.record("@a:x", "flood", 0, memory=60) == 1
    assert offences.record("@a:x", "flood", 30, memory=60) == 2
    assert offences.record("@a:x", "flood", 200, memory=60) == 1
    assert offences.record("@a:x", "mentions", 200, memory=60) == 1
    assert step(("warn", "mute", "ban"), 7) == "ban"


def test_flood_off_counts_nothing():
    rules, room = ProtectionRules(), settings(flood={"enabled": False, "max_messages": 1})
    assert all(not rules.observe(message(event=f"$m{i}"), room, 0) for i in range(10))


# -- mentions ------------------------------------------------------------------------------------


def test_mention_spam_is_more_distinct_mentions_than_the_limit():
    rules, room = ProtectionRules(), settings(mentions={"max_mentions": 3})
    three = frozenset(f"@u{i}:x" for i in range(3))
    assert rules.observe(message(mentions=three), room, 0) == []
    [decision] = rules.observe(message(event="$2", mentions=three | {"@u9:x"}), room, 1)
    assert decision.protection == "mentions" and decision.redact == ("$2",)
    assert "4 mentions" in decision.reason


def test_room_mention_needs_the_power_to_notify_the_room():
    rules, room = ProtectionRules(), settings()
    assert rules.observe(message(room_mention=True, sender_power=50), room, 0) == []
    [decision] = rules.observe(message(event="$2", room_mention=True, sender_power=49), room, 0)
    assert "needs 50, has 49" in decision.reason
    strict = Observation(ROOM, "@b:x", "$3", "message", room_mention=True, sender_power=60,
                         notify_room_power=75)  # fmt: skip
    assert rules.observe(strict, room, 0)


# -- join waves ----------------------------------------------------------------------------------


def test_join_wave_closes_once_on_the_join_over_the_limit():
    rules = ProtectionRules()
    room = settings(join_wave={"enabled": True, "max_joins": 3, "window": 60})
    joins = [
        rules.observe(Observation(ROOM, f"@j{i}:x", f"$j{i}", "join"), room, i) for i in range(8)
    ]
    assert [bool(d) for d in joins] == [False, False, False, True, False, False, False, True]
    assert joins[3][0].action == "close" and "4 joins within 60 s" in joins[3][0].reason


def test_joins_spread_out_are_no_wave_and_the_protection_is_off_by_default():
    rules = ProtectionRules()
    room = settings(join_wave={"enabled": True, "max_joins": 3, "window": 60})
    assert not any(
        rules.observe(Observation(ROOM, f"@j{i}:x", f"$j{i}", "join"), room, i * 30)
        for i in range(20)
    )
    assert not any(
        rules.observe(Observation(ROOM, f"@k{i}:x", f"$k{i}", "join"), settings(), 0)
        for i in range(50)
    )


# -- new joiners ---------------------------------------------------------------------------------


def test_new_joiners_links_and_media_are_held_for_the_period():
    rules = ProtectionRules()
    room = settings(new_joiners={"enabled": True, "period": 600, "mode": "redact"})
    rules.observe(Observation(ROOM, "@new:x", "$j", "join"), room, 0)
    assert rules.observe(message("@new:x", "$t", body="hello all"), room, 10) == []
    [link] = rules.observe(message("@new:x", "$l", hosts=("a.org",)), room, 20)
    [media] = rules.observe(message("@new:x", "$i", msgtype="m.image"), room, 30)
    assert (link.action, media.action) == ("hold", "hold")
    assert "links" in link.reason and "media" in media.reason
    assert rules.observe(message("@new:x", "$late", hosts=("a.org",)), room, 601) == []
    assert rules.observe(message("@old:x", "$o", hosts=("a.org",)), room, 20) == []


def test_new_joiners_report_mode_reports_only():
    rules = ProtectionRules()
    room = settings(new_joiners={"enabled": True, "period": 600, "mode": "report"})
    rules.observe(Observation(ROOM, "@new:x", "$j", "join"), room, 0)
    [decision] = rules.observe(message("@new:x", "$l", msgtype="m.file"), room, 1)
    assert decision.action == "report"


# -- filters -------------------------------------------------------------------------------------


def test_word_domain_and_pattern_filters():
    rules = ProtectionRules()
    room = settings(flood={"enabled": False}, filters={"enabled": True, "words": ["buy crypto", "scam"],
                             "domains": ["evil.org"], "patterns": ["free*nitro", "bit.ly/????"]})  # fmt: skip
    hit = lambda body, hosts=(): rules.observe(message(body=body, hosts=hosts), room, 0)  # noqa: E731
    assert hit("Want to BUY   crypto?") == []  # a phrase matches as written (one space)
    assert hit("Want to BUY crypto?")[0].reason.startswith("the word “buy crypto”")
    assert hit("scammer") == [] and hit("a scam!")
    assert (
        hit("x", ("evil.org",)) and hit("x", ("www.evil.org",)) and not hit("x", ("notevil.org",))
    )
    assert hit("get FREE discord nitro now") and not hit("nitro then free")
    assert hit("see bit.ly/abcd") and not hit("see bit.ly/ab")


def test_filters_off_by_default():
    assert ProtectionRules().observe(message(body="scam"), settings(), 0) == []


# -- the same message in many rooms --------------------------------------------------------------


def test_the_same_message_in_more_rooms_than_the_limit():
    rules = ProtectionRules()
    room = settings(cross_room={"enabled": True, "max_rooms": 2, "window": 60, "min_length": 5})
    text = "Join my server now!!"

    def post(room_id: str, event: str, body: str = text, now: float = 0) -> list:
        return rules.observe(Observation(room_id, "@s:x", event, "message", body=body), room, now)

    assert post("!a:x", "$a") == [] and post("!b:x", "$b", "join MY   server now!!") == []
    [decision] = post("!c:x", "$c")
    assert set(decision.redact) == {"!a:x|$a", "!b:x|$b", "!c:x|$c"}
    assert post("!d:x", "$d", "hi") == [] and post("!e:x", "$e", "hi") == []  # too short
    # Spread out over more than the window: no offence.
    assert (
        post("!f:x", "$f", "another message", 0) == []
        and post("!g:x", "$g", "another message", 100) == []
    )
    assert post("!h:x", "$h", "another message", 200) == []


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "text", "message"),
    [
        ("flud", "max_messages", "5", "no protection 'flud'"),
        ("flood", "speed", "5", "flood has no setting 'speed'"),
        ("flood", "max_messages", "five", "expected a whole number"),
        ("flood", "max_messages", "0", "expected 1 to 1000"),
        ("flood", "window", "soon", "expected a duration"),
        ("flood", "window", "2h", "expected 1s to 1h"),
        ("flood", "actions", "warn, smite", "unknown action 'smite'"),
        ("join_wave", "rule", "public", "expected one of invite, knock"),
        ("flood", "enabled", "maybe", "expected on or off"),
        ("filters", "words", "x" * 101, "at most 100 characters"),
    ],
)
def test_bad_values_are_refused_with_a_reason(name, key, text, message):
    with pytest.raises(SettingError, match=message):
        parse_value(name, key, text)


def test_values_are_parsed_and_shown():
    assert parse_value("flood", "window", "30s") == 30.0
    assert parse_value("flood", "actions", "Warn mute,BAN") == ("warn", "mute", "ban")
    assert parse_value("filters", "domains", "a.org, B.org a.org") == ("a.org", "b.org")
    assert show_value("flood", "window", 90.0) == "1m30s"
    assert show_value("flood", "enabled", False) == "off"


def test_room_overrides_sit_on_the_community_settings():
    community = CommunityProtections.defaults()
    room = community.for_room(
        {"flood": {"max_messages": 3, "bogus": 1}, "mentions": {"enabled": False}}
    )
    assert room["flood"]["max_messages"] == 3 and room["flood"]["window"] == 10.0
    assert not room.on("mentions") and room.on("flood")
    # A stored value that no longer fits falls back to the default.
    assert community.for_room({"flood": {"max_messages": -4}})["flood"]["max_messages"] == 10


def test_new_installs_start_with_flood_and_mentions_on_in_warn_then_mute():
    from bot.config_protections import ProtectionsSettings

    defaults = CommunityProtections.from_config(ProtectionsSettings())
    on = [name for name, values in defaults.values.items() if values["enabled"]]
    assert on == ["flood", "mentions"]
    assert defaults.values["flood"]["actions"] == ("warn", "mute")
    assert defaults.values["mentions"]["actions"] == ("warn", "mute")
    assert not defaults.dry_run
    assert not any(CommunityProtections.from_config(
        ProtectionsSettings(enabled=False)).values[n]["enabled"] for n in defaults.values)  # fmt: skip


# -- the service ---------------------------------------------------------------------------------


class FakeActions:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def room_name(self, room_id: str) -> str:
        return "Lobby"

    def redact_later(self, room_id: str, event_ids: list[str], reason: str) -> None:
        self.calls.append(("redact", room_id, tuple(event_ids)))

    async def mute(self, room_id: str, user_ids: list[str]) -> dict[str, int]:
        self.calls.append(("mute", room_id, tuple(user_ids)))
        return {}

    async def post(self, room_id: str, markdown: str, *, key: str | None = None) -> None:
        self.calls.append(("post", room_id, markdown))

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, *args))
            return {"join_rule": "public"} if name == "join_rule" else None

        return call


class FakeUsers:
    def __init__(self, roles: dict[str, Role]) -> None:
        self.roles = roles

    async def role_of(self, mxid: str) -> Role:
        return self.roles.get(mxid, Role.USER)


class FakeAudit:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    async def record(self, **entry: Any) -> None:
        self.entries.append(entry)

    async def recent(self, limit: int) -> list:
        return []


class FakeStore:
    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], dict[str, Any]] = {}

    async def all_overrides(self) -> dict:
        return {}

    async def set_override(self, room_id, protection, key, value, *, actor):  # type: ignore[no-untyped-def]
        settings = self.saved.setdefault((room_id, protection), {})
        settings[key] = value
        return dict(settings)

    async def lockdowns(self) -> list:
        return []


def service(community: CommunityProtections | None = None, roles: dict[str, Role] | None = None):
    actions, audit, store = FakeActions(), FakeAudit(), FakeStore()
    clock = iter(i * 0.01 for i in range(100_000))
    svc = ProtectionService(
        store, community or CommunityProtections.defaults(), actions, FakeUsers(roles or {}),  # type: ignore[arg-type]
        audit, bot_user_id="@bot:x", admin_room_id="!admin:x", clock=lambda: next(clock),  # type: ignore[arg-type]
    )  # fmt: skip
    return svc, actions, audit, store


async def _settle() -> None:
    await asyncio.sleep(2.5)  # the batches (0.3 s) and the admin-room report (2 s)


async def test_several_flooders_are_muted_in_one_power_level_change_and_reported_once():
    community = CommunityProtections.defaults()
    community = CommunityProtections({**community.values, "flood": {
        **community.values["flood"], "max_messages": 2, "actions": ("mute",)}})  # fmt: skip
    svc, actions, audit, _ = service(community)
    fired: list[tuple[str, str]] = []

    class Counting(Metrics):
        def protection_fired(self, protection: str, action: str) -> None:
            fired.append((protection, action))

    svc.metrics = Counting()
    passed = []
    for i in range(3):
        for who in ("@a:x", "@b:x"):
            passed.append(await svc.screen(message(who, f"${who}{i}")))
    assert passed == [True, True, True, True, False, False]  # a flood's message goes no further
    await _settle()
    assert [c for c in actions.calls if c[0] == "mute"] == [("mute", ROOM, ("@a:x", "@b:x"))]
    reports = [c for c in actions.calls if c[0] == "post" and c[1] == "!admin:x"]
    assert len(reports) == 1 and "`!unmute @a:x --room !room:x`" in reports[0][2]
    assert [e["action"] for e in audit.entries] == ["protect.mute", "protect.mute"]
    assert fired == [("flood", "mute"), ("flood", "mute")]  # what Prometheus counts
    assert {c for c in actions.calls if c[0] == "redact"} == {
        ("redact", ROOM, ("$@a:x2",)), ("redact", ROOM, ("$@b:x2",))}  # fmt: skip
    await svc.stop()


async def test_moderators_the_allow_list_and_room_power_are_exempt():
    community = CommunityProtections.defaults()
    community = CommunityProtections({**community.values, "flood": {
        **community.values["flood"], "max_messages": 1}}, allow=frozenset({"@friend:x"}))  # fmt: skip
    svc, actions, _, _ = service(community, roles={"@mod:x": Role.MODERATOR})
    for i in range(5):
        assert await svc.screen(message("@mod:x", f"$m{i}"))
        assert await svc.screen(message("@friend:x", f"$f{i}"))
        assert await svc.screen(message("@powerful:x", f"$p{i}", sender_power=50))
    assert actions.calls == [] and svc.acted == []
    await svc.stop()


async def test_dry_run_only_reports():
    base = CommunityProtections.defaults()
    community = CommunityProtections({**base.values, "flood": {**base.values["flood"], "max_messages": 1}},
                                     dry_run=True)  # fmt: skip
    svc, actions, audit, _ = service(community)
    for i in range(4):
        await svc.screen(message(event=f"$m{i}"))
    await _settle()
    assert {c[0] for c in actions.calls} == {"post"}
    [report] = actions.calls
    assert report[1] == "!admin:x" and "dry run, nothing done" in report[2]
    assert all(e["detail"]["dry_run"] for e in audit.entries)
    await svc.stop()


async def test_an_event_seen_twice_is_counted_once():
    base = CommunityProtections.defaults()
    community = CommunityProtections(
        {**base.values, "flood": {**base.values["flood"], "max_messages": 1}}
    )
    svc, _, _, _ = service(community)
    for _ in range(5):
        assert await svc.screen(message(event="$same"))
    assert svc.acted == []
    await svc.stop()


async def test_set_option_checks_before_storing():
    svc, _, _, store = service()
    with pytest.raises(SettingError, match="flood max_messages: expected a whole number"):
        await svc.set_option(ROOM, "flood", "max_messages", "lots", "@mod:x")
    assert store.saved == {}
    assert await svc.set_option(ROOM, "flood", "max_messages", "4", "@mod:x") == "4"
    assert svc.settings_for(ROOM)["flood"]["max_messages"] == 4
    assert svc.settings_for("!other:x")["flood"]["max_messages"] == 10
    assert "max_messages 4*" in svc.describe(ROOM)
    await svc.stop()


async def test_redactions_given_up_are_told_in_the_admin_room_gathered_per_room():
    svc, actions, _, _ = service()
    svc.redaction_failed(ROOM, "M_FORBIDDEN")
    svc.redaction_failed(ROOM, "M_FORBIDDEN")
    await _settle()
    posts = [c for c in actions.calls if c[0] == "post" and c[1] == "!admin:x"]
    assert len(posts) == 1
    text = posts[0][2]
    assert "could not remove 2 caught messages" in text and r"M\_FORBIDDEN" in text
    await svc.stop()
