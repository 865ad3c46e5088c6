"""The protections' decisions, pure: given what a member just did in a room (an Observation, told
without Matrix types) and the settings in force there, what the bot should do — nothing, or a
Decision naming the protection, the action of the member's escalation step, the reason, and the
messages to redact. Counting lives in protection_counters.py; acting is the service's job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bot.community.protection_counters import (
    Arrivals,
    Offences,
    SlidingWindow,
    SpreadTracker,
    step,
)
from bot.community.protection_settings import RoomProtections
from bot.community.text_filters import Filters
from bot.lru import LRUDict

MEDIA_KINDS = frozenset({"m.image", "m.video", "m.audio", "m.file", "m.sticker"})


@dataclass(frozen=True)
class Observation:
    room_id: str
    sender: str
    event_id: str
    kind: Literal["message", "join"]
    msgtype: str = "m.text"  # m.text, m.notice, m.image… (m.sticker for stickers)
    body: str = ""
    hosts: tuple[str, ...] = ()  # link hosts in the message (text_filters.link_hosts)
    mentions: frozenset[str] = frozenset()  # distinct users mentioned
    room_mention: bool = False  # @room
    sender_power: int = 0  # the sender's power level in the room
    notify_room_power: int = 50  # power needed to notify the whole room


@dataclass(frozen=True)
class Decision:
    protection: str
    member: str
    room_id: str
    action: (
        str  # warn, redact, mute, kick, ban; "close" (join wave); "hold" / "report" (new joiners)
    )
    reason: str
    redact: tuple[str, ...] = ()  # event ids
    offence: int = 1


@dataclass
class ProtectionRules:
    """One per bot: the counters of every room and member."""

    messages: SlidingWindow[tuple[str, str]] = field(default_factory=SlidingWindow)
    joins: SlidingWindow[str] = field(default_factory=SlidingWindow)
    spread: SpreadTracker = field(default_factory=SpreadTracker)
    arrivals: Arrivals = field(default_factory=Arrivals)
    offences: Offences = field(default_factory=Offences)
    _filters: LRUDict[tuple[tuple[str, ...], ...], Filters] = field(
        default_factory=lambda: LRUDict(64)
    )

    def filters(self, settings: RoomProtections) -> Filters:
        f = settings["filters"]
        key = (tuple(f["words"]), tuple(f["domains"]), tuple(f["patterns"]))
        compiled = self._filters.get(key)
        if compiled is None:
            compiled = self._filters[key] = Filters.build(*key)
        return compiled

    def _decide(
        self, name: str, obs: Observation, settings: RoomProtections, now: float, reason: str,
        redact: tuple[str, ...],
    ) -> Decision:  # fmt: skip
        offence = self.offences.record(obs.sender, name, now, settings.community.escalation_memory)
        action = step(tuple(settings[name]["actions"]), offence)
        if not settings[name].get("redact", False) and action != "redact":
            redact = ()
        return Decision(name, obs.sender, obs.room_id, action, reason, redact, offence)

    def observe(self, obs: Observation, settings: RoomProtections, now: float) -> list[Decision]:
        """Every decision this event calls for (usually none). Members exempt from the
        protections are not passed here, except for their joins (a join wave counts everyone)."""
        if obs.kind == "join":
            return self._join(obs, settings, now)
        decisions = []
        for check in (self._flood, self._mentions, self._filtered, self._spread, self._new):
            decision = check(obs, settings, now)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _join(self, obs: Observation, settings: RoomProtections, now: float) -> list[Decision]:
        self.arrivals.joined(obs.room_id, obs.sender, now)
        wave = settings["join_wave"]
        if not wave["enabled"]:
            return []
        count = self.joins.add(obs.room_id, now, wave["window"], obs.sender)
        if count <= wave["max_joins"]:
            return []
        self.joins.reset(obs.room_id)  # one closing per wave
        reason = f"{count} joins within {int(wave['window'])} s (join wave)"
        return [Decision("join_wave", obs.sender, obs.room_id, "close", reason)]

    def _flood(self, obs: Observation, settings: RoomProtections, now: float) -> Decision | None:
        flood = settings["flood"]
        if not flood["enabled"]:
            return None
        key = (obs.room_id, obs.sender)
        count = self.messages.add(key, now, flood["window"], obs.event_id)
        if count <= flood["max_messages"]:
            return None
        over = tuple(self.messages.items(key)[flood["max_messages"] :])
        self.messages.reset(key)  # the next offence needs a new run over the limit
        reason = f"more than {flood['max_messages']} messages in {int(flood['window'])} s (flood)"
        return self._decide("flood", obs, settings, now, reason, over)

    def _mentions(self, obs: Observation, settings: RoomProtections, now: float) -> Decision | None:
        mentions = settings["mentions"]
        if not mentions["enabled"]:
            return None
        if obs.room_mention and obs.sender_power < obs.notify_room_power:
            reason = (
                f"@room without the power to notify the room (needs {obs.notify_room_power}, "
                f"has {obs.sender_power})"
            )
        elif len(obs.mentions) > mentions["max_mentions"]:
            reason = f"{len(obs.mentions)} mentions in one message (mention spam)"
        else:
            return None
        return self._decide("mentions", obs, settings, now, reason, (obs.event_id,))

    def _filtered(self, obs: Observation, settings: RoomProtections, now: float) -> Decision | None:
        if not settings["filters"]["enabled"]:
            return None
        found = self.filters(settings).find(obs.body, list(obs.hosts))
        if found is None:
            return None
        return self._decide("filters", obs, settings, now, f"{found} (filter)", (obs.event_id,))

    def _spread(self, obs: Observation, settings: RoomProtections, now: float) -> Decision | None:
        spread = settings["cross_room"]
        if not spread["enabled"] or len(obs.body.strip()) < spread["min_length"]:
            return None
        rooms = self.spread.add(
            obs.sender, obs.body, obs.room_id, obs.event_id, now, spread["window"]
        )
        if len(rooms) <= spread["max_rooms"]:
            return None
        self.spread.reset(obs.sender, obs.body)
        reason = f"the same message in {len(rooms)} rooms within {int(spread['window'])} s"
        # Each room's copy is redacted in its own room: the service splits them.
        redact = tuple(f"{room}|{event}" for room, event in rooms.items())
        return self._decide("cross_room", obs, settings, now, reason, redact)

    def _new(self, obs: Observation, settings: RoomProtections, now: float) -> Decision | None:
        new = settings["new_joiners"]
        if not new["enabled"] or not self.arrivals.is_new(
            obs.room_id, obs.sender, now, new["period"]
        ):
            return None
        if obs.msgtype in MEDIA_KINDS:
            what = "media"
        elif obs.hosts:
            what = "links"
        else:
            return None
        minutes = max(1, round(new["period"] / 60))
        reason = f"{what} in the first {minutes} min after joining (new joiner)"
        action = "hold" if new["mode"] == "redact" else "report"
        return Decision("new_joiners", obs.sender, obs.room_id, action, reason, (obs.event_id,))
