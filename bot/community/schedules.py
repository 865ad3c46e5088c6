"""When scheduled announcements run: the `<when>` of `!schedule <when> <room|all> <message>`.

The forms, case-insensitive:

* ``in 2h``, ``in 30m``, ``in 90s``, ``in 1d``, ``in 1h30m`` (also ``in 2 hours``): once, from now;
* ``at 2026-12-24 18:00``, ``at 2026-12-24T18:00``, ``at 18:00`` (the next 18:00, today or
  tomorrow): once, in the configured time zone;
* ``every day 08:30``, ``every monday 09:00`` (or ``mon``), ``every weekday 09:00`` (Monday to
  Friday), optionally with ``at`` before the time: recurring wall-clock times in the configured
  zone, so 09:00 stays 09:00 local when daylight saving time starts or ends;
* ``every 2h``, ``every 30m`` (at least a minute): recurring, counting elapsed time from the
  creation (the first run is one interval after it), so it drifts an hour against the wall clock
  at each DST change.

Some local times happen zero or two times a year, so they need a rule:

* a time in the spring-forward gap (02:30 on the last Sunday of March in Europe/Berlin) runs at
  the first valid moment after it, the instant the clocks jump (03:00 local);
* a time in the fall-back overlap runs once, at its first occurrence.

Anything relative to now (``in 2h``, ``at 18:00``, ``every 2h``) is normalised to absolute local
times (``at 2026-03-01 13:00``, ``every 2h from 2026-03-01 13:00``) so that ``Schedule.text`` can be
stored and means the same after a restart. A normalised local time that occurs twice carries its
UTC offset (``at 2026-10-25 02:30+01:00``) to say which one.

Pure Python: callers pass aware datetimes and the configured ``ZoneInfo``; every instant returned is
aware UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from functools import cached_property
from typing import Literal

from bot.durations import compact_duration, duration_parts, read_duration

HINT = "use in 2h, at 2026-12-24 18:00, every day 08:30 or every monday 09:00"
IN_HINT = "use in 2h, in 30m, in 1d or in 1h30m"
EVERY_HINT = "use every day 08:30, every monday 09:00, every weekday 09:00 or every 2h"

MIN_INTERVAL = timedelta(minutes=1)
MAX_INTERVAL = timedelta(days=366)
MAX_AHEAD = timedelta(days=3660)  # ~10 years: far enough for anyone, and no datetime overflow

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_ABBREVIATIONS = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip
_WEEKDAYS = {name.lower(): i for i, name in enumerate(WEEKDAY_NAMES)} | {
    name[:3].lower(): i for i, name in enumerate(WEEKDAY_NAMES)
}
_EVERY_DAY = frozenset(range(7))
_WORKDAYS = frozenset(range(5))

_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")
_DATE = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")
_OFFSET = re.compile(r"[+-][0-9]{2}:[0-9]{2}")


def _split_offset(word: str) -> tuple[str, str] | None:
    """`18:00+01:00` -> ("18:00", "+01:00"); `18:00z` -> ("18:00", "z")."""
    if len(word) > 6 and _OFFSET.fullmatch(word, len(word) - 6):
        return word[:-6], word[-6:]
    if len(word) > 1 and word.endswith("z"):
        return word[:-1], "z"
    return None


class ScheduleError(ValueError):
    """A `<when>` the bot cannot use; the message is a sentence to show the moderator as is."""


@dataclass(frozen=True)
class _Once:
    at: datetime  # naive: a wall-clock time in the configured zone; aware: an exact instant


@dataclass(frozen=True)
class _Weekly:
    days: frozenset[int]  # 0 = Monday
    at: time


@dataclass(frozen=True)
class _Interval:
    every: timedelta
    start: datetime  # the first run; naive or aware as in _Once


_Rule = _Once | _Weekly | _Interval


@dataclass(frozen=True)
class Schedule:
    """When an announcement runs. `text` is the state to store; `parse_schedule` re-reads it."""

    text: str
    recurring: bool

    @cached_property
    def _rule(self) -> _Rule:
        words = self.text.split()
        rule, used = _parse(words, None, None, reject_past=False)
        if used != len(words):
            raise ScheduleError(f"'{self.text}' has more words than a schedule")
        return rule

    def next_after(self, moment: datetime, tz: tzinfo) -> datetime | None:
        """The first run strictly after `moment`, in UTC; None once a one-off has run."""
        _require_aware(moment)
        rule = self._rule
        if isinstance(rule, _Once):
            run = _resolve(rule.at, tz)
            return run if run > moment else None
        if isinstance(rule, _Interval):
            start = _resolve(rule.start, tz)
            if moment < start:
                return start
            return start + ((moment - start) // rule.every + 1) * rule.every
        local_day = moment.astimezone(tz).date()
        for offset in range(8):  # a weekly run whose time passed today is 7 days on
            day = local_day + timedelta(days=offset)
            if day.weekday() in rule.days:
                run = _resolve(datetime.combine(day, rule.at), tz)
                if run > moment:
                    return run
        raise AssertionError(f"no run within a week for {self.text!r}")

    def describe(self, tz: tzinfo) -> str:
        """For people: 'once on Thu 24 Dec 2026 18:00 (Europe/Berlin)'."""
        zone = _zone_name(tz)
        rule = self._rule
        if isinstance(rule, _Once):
            return f"once on {_human_moment(_resolve(rule.at, tz), tz)} ({zone})"
        if isinstance(rule, _Interval):
            first = _human_moment(_resolve(rule.start, tz), tz)
            return f"every {_human_duration(rule.every)} from {first} ({zone})"
        if rule.days == _EVERY_DAY:
            days = "every day"
        elif rule.days == _WORKDAYS:
            days = "every weekday (Mon–Fri)"
        else:
            days = "every " + " and ".join(WEEKDAY_NAMES[day] for day in sorted(rule.days))
        return f"{days} at {_clock_text(rule.at)} ({zone})"


def parse_when(words: list[str], now: datetime, tz: tzinfo) -> tuple[Schedule, int]:
    """Read the `<when>` at the start of a command's words; also how many words it took, so the
    caller knows where the room and the message begin. A one-off in the past is refused."""
    _require_aware(now)
    rule, used = _parse(words, now, tz, reject_past=True)
    return _schedule(rule, tz), used


def when_length(words: list[str]) -> int:
    """How many of `words` the `<when>` at their start takes (the grammar alone: whether the time
    has passed is for parse_when to say, in the right time zone). Raises ScheduleError."""
    return _parse(words, datetime.now(UTC), UTC, reject_past=False)[1]


def parse_schedule(text: str, now: datetime, tz: tzinfo) -> Schedule:
    """Re-read a stored `Schedule.text` after a restart. Unlike `parse_when`, a one-off in the past
    is kept (its `next_after` is None) so the caller can decide with `missed_run`."""
    _require_aware(now)
    words = text.split()
    rule, used = _parse(words, now, tz, reject_past=False)
    if used < len(words):
        extra = " ".join(words[used:])
        raise ScheduleError(f"'{text}' has words I don't understand after the time: '{extra}'")
    return _schedule(rule, tz)


def missed_run(due: datetime, now: datetime, grace: timedelta) -> Literal["run", "skip", "wait"]:
    """What to do with a run found on start-up: a little late is still useful, but a pile of stale
    announcements after a long outage would only be noise."""
    if due > now:
        return "wait"
    return "run" if now - due <= grace else "skip"


# Parsing ----------------------------------------------------------------------------------------


def _parse(
    words: list[str], now: datetime | None, tz: tzinfo | None, *, reject_past: bool
) -> tuple[_Rule, int]:
    """The rule and the number of words used. Without `now` (re-reading normalised text) the
    forms relative to now are refused and times are kept as written."""
    if not words:
        raise ScheduleError(f"Tell me when: {HINT}")
    head = words[0].lower()
    if head == "in":
        return _parse_in(words, now)
    if head == "at":
        moment, used = _parse_moment(words, 1, now, tz, reject_past=reject_past)
        return _Once(moment), 1 + used
    if head == "every":
        return _parse_every(words, now, tz)
    raise ScheduleError(f"I don't understand '{_quote(words)}': {HINT}")


def _parse_in(words: list[str], now: datetime | None) -> tuple[_Rule, int]:
    parsed = read_duration(words, 1)
    if parsed is None:
        raise ScheduleError(f"I don't understand '{_quote(words)}': {IN_HINT}")
    seconds, used = parsed
    said = " ".join(words[: 1 + used])
    if seconds == 0:
        raise ScheduleError(f"'{said}' is now: give a delay, e.g. in 30m")
    if seconds > MAX_AHEAD.total_seconds():
        raise ScheduleError(f"'{said}' is too far ahead: I can schedule up to 10 years ahead")
    return _Once(_start(now, said) + timedelta(seconds=seconds)), 1 + used


def _parse_every(words: list[str], now: datetime | None, tz: tzinfo | None) -> tuple[_Rule, int]:
    what = words[1].lower() if len(words) > 1 else ""
    if what == "day" or what == "weekday" or what in _WEEKDAYS:
        days = {"day": _EVERY_DAY, "weekday": _WORKDAYS}.get(what) or frozenset({_WEEKDAYS[what]})
        i = 3 if len(words) > 2 and words[2].lower() == "at" else 2
        return _Weekly(days, _clock_at(words, i)), i + 1
    parsed = read_duration(words, 1)
    if parsed is None:
        raise ScheduleError(f"I don't understand '{_quote(words)}': {EVERY_HINT}")
    seconds, used = parsed
    i = 1 + used
    said = " ".join(words[:i])
    if seconds < MIN_INTERVAL.total_seconds():
        raise ScheduleError(f"'{said}' is too often: the shortest interval is 1 minute")
    if seconds > MAX_INTERVAL.total_seconds():
        raise ScheduleError(
            f"'{said}' is too far apart: the longest interval is 366 days (use at for one run)"
        )
    every = timedelta(seconds=seconds)
    if i < len(words) and words[i].lower() == "from":
        start, used = _parse_moment(words, i + 1, now, tz, reject_past=False)
        return _Interval(every, start), i + 1 + used
    return _Interval(every, _start(now, said) + every), i


def _parse_moment(
    words: list[str], i: int, now: datetime | None, tz: tzinfo | None, *, reject_past: bool
) -> tuple[datetime, int]:
    """A date and time, or a time alone (the next one), at words[i:]; with `now`, the run as a UTC
    instant, else the time as written (naive, or aware if it names its offset)."""
    lead = " ".join(words[:i])
    example = f"e.g. {lead} 18:00 or {lead} 2026-12-24 18:00"
    if i >= len(words):
        raise ScheduleError(f"'{lead}' needs a time, {example}")
    first = words[i].lower()
    if not first[:1].isdigit():
        raise ScheduleError(f"'{lead}' needs a time, {example}")
    if not any(mark in first for mark in "-/."):
        said = f"{lead} {words[i]}"
        return _next_time_of_day(_clock_of(words[i]), _start(now, said), tz), 1
    if "t" in first:
        date_word, _, time_word = first.partition("t")
        used = 1
    else:
        if i + 1 >= len(words) or not words[i + 1][:1].isdigit():
            raise ScheduleError(f"'{lead} {words[i]}' needs a time too, e.g. {lead} {first} 18:00")
        date_word, time_word = first, words[i + 1].lower()
        used = 2
    written = datetime.combine(_date_of(date_word), time())
    with_offset = _split_offset(time_word)
    if with_offset:
        written = written.replace(tzinfo=_offset_of(with_offset[1], time_word))
        time_word = with_offset[0]
    clock = _clock_of(time_word)
    written = written.replace(hour=clock.hour, minute=clock.minute, second=clock.second)
    if now is None or tz is None:
        return written, used
    runs = _occurrences(written, tz)
    upcoming = [run for run in runs if run > now]
    if upcoming:
        return upcoming[0], used
    if reject_past:
        raise ScheduleError(f"'{' '.join(words[: i + used])}' is in the past")
    return runs[0], used


def _next_time_of_day(clock: time, now: datetime, tz: tzinfo | None) -> datetime:
    if tz is None:
        raise ScheduleError("a time of day alone needs the time zone")
    today = now.astimezone(tz).date()
    for offset in range(3):
        for run in _occurrences(datetime.combine(today + timedelta(days=offset), clock), tz):
            if run > now:
                return run
    raise AssertionError(f"no {clock} within two days of {now}")


def _clock_at(words: list[str], i: int) -> time:
    lead = " ".join(words[:i])
    if i >= len(words) or not words[i][:1].isdigit():
        raise ScheduleError(f"'{lead}' needs a time of day, e.g. {lead} 09:00")
    return _clock_of(words[i])


def _clock_of(word: str) -> time:
    match = _CLOCK.fullmatch(word)
    if match is None:
        raise ScheduleError(
            f"'{word}' is not a time of day: use 24-hour HH:MM, e.g. 09:00 or 18:30"
        )
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ScheduleError(f"'{word}' is not a time of day: use 00:00 to 23:59")
    return time(hour, minute, second)


def _date_of(word: str) -> date:
    match = _DATE.fullmatch(word)
    if match is None:
        raise ScheduleError(f"'{word}' is not a date: use YYYY-MM-DD, e.g. 2026-12-24")
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    if not 1 <= month <= 12:
        raise ScheduleError(f"'{word}' is not a date: months go from 01 to 12")
    try:
        return date(year, month, day)
    except ValueError:
        raise ScheduleError(f"'{word}' is not a date: that month has no day {day}") from None


def _offset_of(text: str, word: str) -> timezone:
    if text == "z":
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        raise ScheduleError(f"'{word}' has an impossible UTC offset")
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _start(now: datetime | None, said: str) -> datetime:
    """Now, to the second: runs relative to it are stored to the second."""
    if now is None:
        raise ScheduleError(f"'{said}' is relative to now, so it needs the current time")
    return now.replace(microsecond=0)


def _quote(words: list[str]) -> str:
    """The words that were probably meant as the time: up to three, stopping at a room."""
    taken: list[str] = []
    for word in words[:3]:
        if taken and (word.startswith(("#", "!", "@")) or word.lower() == "all"):
            break
        taken.append(word)
    return " ".join(taken)


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} needs a time zone (pass aware UTC datetimes)")


# Local times and instants -----------------------------------------------------------------------


def _occurrences(at: datetime, tz: tzinfo) -> list[datetime]:
    """The UTC instants a written time stands for, earliest first: one, two in a fall-back
    overlap, and for a time in a spring-forward gap, the instant the clocks jump past it."""
    if at.tzinfo is not None:
        return [at.astimezone(UTC)]
    candidates = sorted({at.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)})
    existing = [c for c in candidates if c.astimezone(tz).replace(tzinfo=None) == at]
    return existing or [_end_of_gap(at, candidates[0], candidates[-1], tz)]


def _end_of_gap(at: datetime, before: datetime, after: datetime, tz: tzinfo) -> datetime:
    """The first whole second whose local time is past `at`, found between an instant whose local
    time is before it and one whose local time is after it (zoneinfo lists no transitions)."""
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).replace(tzinfo=None) > at:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _resolve(at: datetime, tz: tzinfo) -> datetime:
    return _occurrences(at, tz)[0]


def _as_written(instant: datetime, tz: tzinfo) -> datetime:
    """The local time to store for an instant: naive, unless only its offset tells which of two
    equal local times it is."""
    local = instant.astimezone(tz)
    naive = local.replace(tzinfo=None)
    return naive if _resolve(naive, tz) == instant else local


# Text -------------------------------------------------------------------------------------------


def _schedule(rule: _Rule, tz: tzinfo) -> Schedule:
    if isinstance(rule, _Once):
        text = f"at {_moment_text(_as_written(_resolve(rule.at, tz), tz))}"
    elif isinstance(rule, _Interval):
        start = _moment_text(_as_written(_resolve(rule.start, tz), tz))
        text = f"every {compact_duration(rule.every)} from {start}"
    else:
        if rule.days == _EVERY_DAY:
            days = "day"
        elif rule.days == _WORKDAYS:
            days = "weekday"
        else:
            (day,) = rule.days
            days = WEEKDAY_NAMES[day].lower()
        text = f"every {days} {_clock_text(rule.at)}"
    return Schedule(text, recurring=not isinstance(rule, _Once))


def _clock_text(clock: time) -> str:
    return f"{clock.hour:02d}:{clock.minute:02d}" + (f":{clock.second:02d}" if clock.second else "")


def _moment_text(at: datetime) -> str:
    text = f"{at.year:04d}-{at.month:02d}-{at.day:02d} {_clock_text(at.time())}"
    offset = at.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        text += f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return text


def _human_moment(instant: datetime, tz: tzinfo) -> str:
    local = instant.astimezone(tz)
    weekday = WEEKDAY_NAMES[local.weekday()][:3]
    month = _MONTH_ABBREVIATIONS[local.month - 1]
    return f"{weekday} {local.day} {month} {local.year} {_clock_text(local.time())}"


def _human_duration(every: timedelta) -> str:
    parts = duration_parts(every)
    if len(parts) == 1 and parts[0][0] == 1:
        return parts[0][2]  # "every hour", not "every 1 hour"
    return " ".join(f"{count} {name}{'s' if count != 1 else ''}" for count, _, name in parts)


def _zone_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or str(tz)
