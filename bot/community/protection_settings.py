"""What each protection is set to: the community's `[protections]` section, with per-room overrides
on top (`!protect on|off|set`). One table of keys (type, range, default) serves both: the config
section is built from the same defaults, and a moderator's value is parsed and checked here, with
a friendly message, before anything is stored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.durations import compact_duration, parse_duration

NAMES = ("flood", "mentions", "join_wave", "new_joiners", "filters", "cross_room")
ACTIONS = ("warn", "redact", "mute", "kick", "ban")
MAX_LIST_ITEMS = 500
MAX_PATTERN_CHARS = 100


class SettingError(ValueError):
    """A value a moderator gave does not fit; `str()` says why, for them."""


@dataclass(frozen=True)
class Key:
    kind: str  # bool, int, duration, actions, words, choice
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


# protection -> key -> how it is read. "enabled" is every protection's on/off switch.
KEYS: dict[str, dict[str, Key]] = {
    "flood": {
        "enabled": Key("bool", True),
        "max_messages": Key("int", 10, 1, 1000, help="more than this many messages…"),
        "window": Key("duration", 10.0, 1, 3600, help="…within this long, from one member"),
        "actions": Key("actions", ("warn", "mute"), help="the 1st, 2nd, … offence gets"),
        "redact": Key("bool", True, help="redact the messages over the limit"),
    },
    "mentions": {
        "enabled": Key("bool", True),
        "max_mentions": Key("int", 10, 1, 1000, help="more distinct mentions than this"),
        "actions": Key("actions", ("warn", "mute")),
        "redact": Key("bool", True),
    },
    "join_wave": {
        "enabled": Key("bool", False),
        "max_joins": Key("int", 10, 1, 10000, help="more joins than this…"),
        "window": Key("duration", 60.0, 1, 86400, help="…within this long"),
        "cooldown": Key("duration", 600.0, 10, 7 * 86400, help="the room stays closed this long"),
        "rule": Key("choice", "invite", choices=("invite", "knock")),
    },
    "new_joiners": {
        "enabled": Key("bool", False),
        "period": Key("duration", 600.0, 1, 7 * 86400, help="how long a member counts as new"),
        "mode": Key("choice", "redact", choices=("redact", "report")),
    },
    "filters": {
        "enabled": Key("bool", False),
        "words": Key("words", ()),
        "domains": Key("words", ()),
        "patterns": Key("words", (), help="globs: * any run of characters, ? one character"),
        "actions": Key("actions", ("warn", "mute")),
        "redact": Key("bool", True),
    },
    "cross_room": {
        "enabled": Key("bool", False),
        "max_rooms": Key("int", 3, 1, 1000, help="the same message in more rooms than this…"),
        "window": Key("duration", 60.0, 1, 86400, help="…within this long"),
        "min_length": Key("int", 10, 1, 10000, help="shorter messages are not compared"),
        "actions": Key("actions", ("warn", "mute")),
        "redact": Key("bool", True),
    },
}


def config_key(name: str, key: str) -> str:
    """The `[protections]` key of a protection's setting: `flood` for flood's switch,
    `flood_max_messages` for the others."""
    return name if key == "enabled" else f"{name}_{key}"


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    raise SettingError("expected on or off")


def _parse_int(text: str, spec: Key) -> int:
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit() or len(stripped) > 9:
        raise SettingError("expected a whole number")
    return _in_range(int(stripped), spec, str)


def _in_range(value: Any, spec: Key, show: Callable[[Any], str]) -> Any:
    if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
        raise SettingError(f"expected {show(spec.low)} to {show(spec.high)}")
    return value


def _show_seconds(value: float | None) -> str:
    return compact_duration(timedelta(seconds=value or 0))


def _parse_duration(text: str, spec: Key) -> float:
    duration = parse_duration(text.strip())
    if duration is None:
        raise SettingError("expected a duration such as 30s, 10m or 2h")
    return _in_range(_seconds(duration), spec, _show_seconds)


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.replace(",", " ").split() if item.strip()]


def parse_actions(items: list[str]) -> tuple[str, ...]:
    if not items:
        raise SettingError(f"give at least one of {', '.join(ACTIONS)}")
    if len(items) > 10:
        raise SettingError("at most 10 steps")
    lowered = tuple(item.lower() for item in items)
    unknown = [item for item in lowered if item not in ACTIONS]
    if unknown:
        raise SettingError(f"unknown action {unknown[0][:30]!r}: use {', '.join(ACTIONS)}")
    return lowered


def parse_words(items: list[str]) -> tuple[str, ...]:
    if len(items) > MAX_LIST_ITEMS:
        raise SettingError(f"at most {MAX_LIST_ITEMS} entries")
    long = [item for item in items if len(item) > MAX_PATTERN_CHARS]
    if long:
        raise SettingError(f"entries are at most {MAX_PATTERN_CHARS} characters long")
    return tuple(dict.fromkeys(item.lower() for item in items))


def parse_value(name: str, key: str, text: str) -> Any:
    """A moderator's text for `name`.`key`, as the stored value. Raises SettingError."""
    spec = spec_of(name, key)
    if spec.kind == "bool":
        return _parse_bool(text)
    if spec.kind == "int":
        return _parse_int(text, spec)
    if spec.kind == "duration":
        return _parse_duration(text, spec)
    if spec.kind == "choice":
        lowered = text.strip().lower()
        if lowered not in spec.choices:
            raise SettingError(f"expected one of {', '.join(spec.choices)}")
        return lowered
    if spec.kind == "actions":
        return parse_actions(_items(text))
    return parse_words(_items(text))


def spec_of(name: str, key: str) -> Key:
    keys = KEYS.get(name)
    if keys is None:
        raise SettingError(f"there is no protection {name[:40]!r}; there are {', '.join(NAMES)}")
    spec = keys.get(key)
    if spec is None:
        raise SettingError(f"{name} has no setting {key[:40]!r}; it has {', '.join(keys)}")
    return spec


def show_value(name: str, key: str, value: Any) -> str:
    spec = spec_of(name, key)
    if spec.kind == "bool":
        return "on" if value else "off"
    if spec.kind == "duration":
        return _show_seconds(value)
    if spec.kind in ("actions", "words"):
        return ", ".join(value) if value else "(none)"
    return str(value)


def _stored(name: str, key: str, value: Any) -> Any:
    """A value read back from the store (JSON) as the key's kind, or the default if it no longer
    fits (a key whose range changed)."""
    spec = spec_of(name, key)
    try:
        if spec.kind in ("actions", "words"):
            return (
                parse_actions(list(value)) if spec.kind == "actions" else parse_words(list(value))
            )
        if spec.kind == "bool":
            return bool(value)
        if spec.kind == "int":
            return _in_range(int(value), spec, str)
        if spec.kind == "duration":
            return _in_range(float(value), spec, _show_seconds)
        if spec.kind == "choice" and value in spec.choices:
            return value
    except (SettingError, TypeError, ValueError):
        pass
    return spec.default


@dataclass(frozen=True)
class CommunityProtections:
    """`[protections]`: the settings of every protection, plus what holds for all of them."""

    values: Mapping[str, Mapping[str, Any]]  # protection -> key -> value
    dry_run: bool = False
    allow: frozenset[str] = frozenset()  # members no protection acts on
    exempt_power_level: int = 50  # members with at least this power level in a room
    escalation_memory: float = 3600.0  # seconds an offence counts towards the next step
    report: bool = True  # report in the admin room

    @classmethod
    def defaults(cls) -> CommunityProtections:
        return cls({n: {k: s.default for k, s in keys.items()} for n, keys in KEYS.items()})

    @classmethod
    def from_config(cls, section: Any) -> CommunityProtections:
        """From bot.config's ProtectionsSettings (flat keys, see config_key())."""
        values: dict[str, dict[str, Any]] = {}
        for name, keys in KEYS.items():
            values[name] = {}
            for key, spec in keys.items():
                raw = getattr(section, config_key(name, key))
                if spec.kind == "duration":
                    raw = _seconds(raw)
                elif spec.kind in ("actions", "words"):
                    raw = tuple(raw)
                values[name][key] = raw if section.enabled or key != "enabled" else False
        return cls(
            values, dry_run=section.dry_run, allow=frozenset(section.allow),
            exempt_power_level=section.exempt_power_level,
            escalation_memory=_seconds(section.escalation_memory), report=section.report,
        )  # fmt: skip

    def for_room(self, overrides: Mapping[str, Mapping[str, Any]]) -> RoomProtections:
        merged = {
            name: {
                **keys,
                **{k: _stored(name, k, v) for k, v in overrides.get(name, {}).items() if k in keys},
            }
            for name, keys in self.values.items()
        }
        return RoomProtections(merged, self)


@dataclass(frozen=True)
class RoomProtections:
    """The settings in force in one room."""

    values: Mapping[str, Mapping[str, Any]]
    community: CommunityProtections

    def on(self, name: str) -> bool:
        return bool(self.values[name]["enabled"])

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return self.values[name]
