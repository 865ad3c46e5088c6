"""``[protections]``: the community's protections against spam and raids (see
bot/community/protection_settings.py, which reads this section and lets moderators override it
per room). Flat keys, ``<protection>`` for a protection's switch and ``<protection>_<key>`` for
its settings, so each can also be set from the environment (``CB_PROTECTIONS_FLOOD_WINDOW``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from bot.config_sources import OutOfRange, Section, show
from bot.durations import parse_duration
from bot.matrix_ids import is_user_id


def _duration(value: object) -> object:
    duration = parse_duration(value) if isinstance(value, str) else value
    if duration is None:
        raise ValueError(f"expected a duration such as 10s, 10m or 1h, got {show(value)}")
    return duration


def _user_id(value: object) -> object:
    if isinstance(value, str) and not is_user_id(value):
        raise ValueError(f"expected Matrix user ids like @someone:example.org, got {show(value)}")
    return value


def _span(low: timedelta, high: timedelta, text: str) -> object:
    return Annotated[
        timedelta, BeforeValidator(_duration), Field(ge=low, le=high), OutOfRange(text)
    ]


def _count(low: int, high: int) -> object:
    return Annotated[int, Field(ge=low, le=high), OutOfRange(f"expected {low} to {high}")]


Action = Literal["warn", "redact", "mute", "kick", "ban"]
Actions = Annotated[tuple[Action, ...], Field(min_length=1, max_length=10)]
Entries = Annotated[tuple[Annotated[str, Field(min_length=1, max_length=100)], ...],
                    Field(max_length=500)]  # fmt: skip
S, M, H, D = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


class ProtectionsSettings(Section):
    """``[protections]``."""

    enabled: bool = True
    dry_run: bool = False
    allow: tuple[Annotated[str, BeforeValidator(_user_id)], ...] = ()
    exempt_power_level: _count(1, 1_000_000) = 50  # type: ignore[valid-type]
    escalation_memory: _span(M, 30 * D, "must be between 1m and 30d") = H  # type: ignore[valid-type]
    report: bool = True
    # Redactions of caught messages go out in the background at most this fast (Synapse counts
    # them against the bot's rc_message: 0.2/s by default); raise it for an exempt bot.
    redactions_per_minute: _count(1, 6000) = 6  # type: ignore[valid-type]

    flood: bool = True
    flood_max_messages: _count(1, 1000) = 10  # type: ignore[valid-type]
    flood_window: _span(S, H, "must be between 1s and 1h") = 10 * S  # type: ignore[valid-type]
    flood_actions: Actions = ("warn", "mute")
    flood_redact: bool = True

    mentions: bool = True
    mentions_max_mentions: _count(1, 1000) = 10  # type: ignore[valid-type]
    mentions_actions: Actions = ("warn", "mute")
    mentions_redact: bool = True

    join_wave: bool = False
    join_wave_max_joins: _count(1, 10_000) = 10  # type: ignore[valid-type]
    join_wave_window: _span(S, D, "must be between 1s and 1d") = M  # type: ignore[valid-type]
    join_wave_cooldown: _span(10 * S, 7 * D, "must be between 10s and 7d") = 10 * M  # type: ignore[valid-type]
    join_wave_rule: Literal["invite", "knock"] = "invite"

    new_joiners: bool = False
    new_joiners_period: _span(S, 7 * D, "must be between 1s and 7d") = 10 * M  # type: ignore[valid-type]
    new_joiners_mode: Literal["redact", "report"] = "redact"

    filters: bool = False
    filters_words: Entries = ()
    filters_domains: Entries = ()
    filters_patterns: Entries = ()
    filters_actions: Actions = ("warn", "mute")
    filters_redact: bool = True

    cross_room: bool = False
    cross_room_max_rooms: _count(1, 1000) = 3  # type: ignore[valid-type]
    cross_room_window: _span(S, D, "must be between 1s and 1d") = M  # type: ignore[valid-type]
    cross_room_min_length: _count(1, 10_000) = 10  # type: ignore[valid-type]
    cross_room_actions: Actions = ("warn", "mute")
    cross_room_redact: bool = True
