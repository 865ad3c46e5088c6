from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.community.schedules import (
    Schedule,
    ScheduleError,
    missed_run,
    parse_schedule,
    parse_when,
)

BERLIN = ZoneInfo("Europe/Berlin")
UTC_ZONE = ZoneInfo("UTC")
# Sunday 1 March 2026, 11:00 in Berlin (CET, UTC+1).
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def when(text: str, now: datetime = NOW, tz: ZoneInfo = BERLIN) -> Schedule:
    """Parse a whole `<when>`, checking it used every word."""
    words = text.split()
    schedule, used = parse_when(words, now, tz)
    assert used == len(words)
    return schedule


def problem(text: str, now: datetime = NOW, tz: ZoneInfo = BERLIN) -> str:
    with pytest.raises(ScheduleError) as raised:
        parse_when(text.split(), now, tz)
    return str(raised.value)


# One-offs relative to now ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised", "run"),
    [
        ("in 2h", "at 2026-03-01 13:00", utc(2026, 3, 1, 12)),
        ("in 30m", "at 2026-03-01 11:30", utc(2026, 3, 1, 10, 30)),
        ("in 90s", "at 2026-03-01 11:01:30", utc(2026, 3, 1, 10, 1, 30)),
        ("in 1d", "at 2026-03-02 11:00", utc(2026, 3, 2, 10)),
        ("in 1h30m", "at 2026-03-01 12:30", utc(2026, 3, 1, 11, 30)),
        ("in 1h 30m", "at 2026-03-01 12:30", utc(2026, 3, 1, 11, 30)),
        ("in 2 hours", "at 2026-03-01 13:00", utc(2026, 3, 1, 12)),
        ("in 1w", "at 2026-03-08 11:00", utc(2026, 3, 8, 10)),
        ("IN 2H", "at 2026-03-01 13:00", utc(2026, 3, 1, 12)),
    ],
)
def test_in_is_normalised_to_an_absolute_local_at(text, normalised, run):
    schedule = when(text)
    assert schedule == Schedule(normalised, recurring=False)
    assert schedule.next_after(NOW, BERLIN) == run


def test_in_keeps_seconds_of_now_but_not_microseconds():
    now = datetime(2026, 3, 1, 10, 0, 30, 999_999, tzinfo=UTC)
    schedule = when("in 2h", now)
    assert schedule.text == "at 2026-03-01 13:00:30"
    assert schedule.next_after(now, BERLIN) == utc(2026, 3, 1, 12, 0, 30)


def test_normalised_in_means_the_same_after_a_restart():
    schedule = when("in 2h")
    later = NOW + timedelta(minutes=90)  # the bot restarts before the run
    reread = parse_schedule(schedule.text, later, BERLIN)
    assert reread == schedule
    assert reread.next_after(later, BERLIN) == utc(2026, 3, 1, 12)


def test_in_landing_in_the_repeated_hour_names_its_offset():
    # 02:45 CEST on the fall-back day; an hour later it is 02:45 again, now CET.
    now = utc(2026, 10, 25, 0, 45)
    schedule = when("in 1h", now)
    assert schedule.text == "at 2026-10-25 02:45+01:00"
    assert schedule.next_after(now, BERLIN) == utc(2026, 10, 25, 1, 45)
    assert parse_schedule(schedule.text, now, BERLIN) == schedule


# One-offs at a time --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["at 2026-12-24 18:00", "at 2026-12-24T18:00", "AT 2026-12-24t18:00", "at 2026-12-24 18:00:00"],
)
def test_at_a_date_and_time(text):
    schedule = when(text)
    assert schedule == Schedule("at 2026-12-24 18:00", recurring=False)
    assert schedule.next_after(NOW, BERLIN) == utc(2026, 12, 24, 17)
    assert schedule.describe(BERLIN) == "once on Thu 24 Dec 2026 18:00 (Europe/Berlin)"


def test_at_a_date_is_in_the_configured_zone():
    schedule = when("at 2026-12-24 18:00", tz=UTC_ZONE)
    assert schedule.next_after(NOW, UTC_ZONE) == utc(2026, 12, 24, 18)
    assert schedule.describe(UTC_ZONE) == "once on Thu 24 Dec 2026 18:00 (UTC)"


def test_at_with_an_explicit_offset_is_that_instant():
    schedule = when("at 2026-12-24T18:00+05:00")
    assert schedule.next_after(NOW, BERLIN) == utc(2026, 12, 24, 13)
    assert schedule.text == "at 2026-12-24 14:00"
    assert when("at 2026-12-24T18:00Z").next_after(NOW, BERLIN) == utc(2026, 12, 24, 18)


def test_at_a_time_of_day_is_the_next_one_today_or_tomorrow():
    assert when("at 18:00").text == "at 2026-03-01 18:00"  # it is 11:00
    assert when("at 10:00").text == "at 2026-03-02 10:00"
    assert when("at 11:00").text == "at 2026-03-02 11:00"  # exactly now is not "next"
    assert when("at 9:05").text == "at 2026-03-02 09:05"
    late = utc(2026, 12, 31, 22, 30)  # 23:30 on New Year's Eve in Berlin
    assert when("at 00:15", late).text == "at 2027-01-01 00:15"


def test_at_a_time_of_day_may_be_the_repeated_hour():
    now = utc(2026, 10, 25, 0, 45)  # 02:45 CEST; 02:30 CET is still to come
    schedule = when("at 02:30", now)
    assert schedule.text == "at 2026-10-25 02:30+01:00"
    assert schedule.next_after(now, BERLIN) == utc(2026, 10, 25, 1, 30)


def test_a_time_in_the_spring_forward_gap_runs_when_the_clocks_jump():
    # 02:30 does not exist on 29 March 2026 in Berlin: 02:00 CET became 03:00 CEST.
    schedule = when("at 2026-03-29 02:30")
    assert schedule.next_after(NOW, BERLIN) == utc(2026, 3, 29, 1)
    assert schedule.text == "at 2026-03-29 03:00"
    assert schedule.describe(BERLIN) == "once on Sun 29 Mar 2026 03:00 (Europe/Berlin)"


def test_a_repeated_time_means_its_first_occurrence():
    schedule = when("at 2026-10-25 02:30")
    assert schedule.next_after(NOW, BERLIN) == utc(2026, 10, 25, 0, 30)  # CEST, UTC+2
    assert schedule.text == "at 2026-10-25 02:30"


def test_a_one_off_in_the_past_is_refused():
    assert problem("at 2020-01-01 10:00") == "'at 2020-01-01 10:00' is in the past"
    assert problem("at 2026-03-01 11:00") == "'at 2026-03-01 11:00' is in the past"  # now
    assert problem("at 2026-03-01T10:59") == "'at 2026-03-01T10:59' is in the past"
    assert when("at 2026-03-01 11:01").next_after(NOW, BERLIN) == utc(2026, 3, 1, 10, 1)


def test_a_one_off_has_no_run_after_it_ran():
    schedule = when("at 2026-12-24 18:00")
    run = schedule.next_after(NOW, BERLIN)
    assert run == utc(2026, 12, 24, 17)
    assert schedule.next_after(run - timedelta(seconds=1), BERLIN) == run
    assert schedule.next_after(run, BERLIN) is None
    assert schedule.next_after(run + timedelta(days=1), BERLIN) is None


def test_a_stored_one_off_in_the_past_is_still_readable():
    schedule = parse_schedule("at 2026-03-01 09:00", NOW, BERLIN)
    assert schedule == Schedule("at 2026-03-01 09:00", recurring=False)
    assert schedule.next_after(NOW, BERLIN) is None
    assert schedule.next_after(NOW - timedelta(hours=3), BERLIN) == utc(2026, 3, 1, 8)


@pytest.mark.parametrize("day", [utc(2026, 3, 28, 12), utc(2026, 10, 24, 12)])
def test_relative_one_offs_survive_a_restart_around_dst(day):
    """Every `in` normalises to text that, re-read, is the same instant (also in the gap and the
    repeated hour)."""
    for step in range(0, 24 * 60, 7):
        now = day + timedelta(minutes=step, seconds=13)
        for delay, length in (("in 1h", timedelta(hours=1)), ("in 95m", timedelta(minutes=95))):
            schedule = when(delay, now)
            reread = parse_schedule(schedule.text, now + timedelta(minutes=30), BERLIN)
            assert reread == schedule
            assert reread.next_after(now, BERLIN) == now + length, schedule.text


# Recurring wall-clock times -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("every day 08:30", "every day 08:30"),
        ("every day at 8:30", "every day 08:30"),
        ("EVERY Day 08:30", "every day 08:30"),
        ("every monday 09:00", "every monday 09:00"),
        ("every mon 09:00", "every monday 09:00"),
        ("every Monday at 09:00", "every monday 09:00"),
        ("every tue 09:00", "every tuesday 09:00"),
        ("every wednesday 09:00", "every wednesday 09:00"),
        ("every thu 09:00", "every thursday 09:00"),
        ("every fri 09:00", "every friday 09:00"),
        ("every sat 09:00", "every saturday 09:00"),
        ("every sunday 23:59", "every sunday 23:59"),
        ("every weekday 09:00", "every weekday 09:00"),
        ("every day 00:00", "every day 00:00"),
        ("every day 07:15:30", "every day 07:15:30"),
    ],
)
def test_recurring_wall_clock_forms(text, normalised):
    schedule = when(text)
    assert schedule == Schedule(normalised, recurring=True)
    assert parse_schedule(schedule.text, NOW, BERLIN) == schedule


def test_daily_next_after():
    daily = when("every day 08:30")
    assert daily.next_after(NOW, BERLIN) == utc(2026, 3, 2, 7, 30)  # 08:30 passed today
    assert when("every day 12:00").next_after(NOW, BERLIN) == utc(2026, 3, 1, 11)
    run = utc(2026, 3, 2, 7, 30)
    assert daily.next_after(run, BERLIN) == run + timedelta(days=1)  # strictly after
    assert daily.next_after(run - timedelta(microseconds=1), BERLIN) == run


def test_daily_just_around_local_midnight():
    # 00:30 on 2 March in Berlin, still 1 March in UTC.
    moment = utc(2026, 3, 1, 23, 30)
    assert when("every day 00:15").next_after(moment, BERLIN) == utc(2026, 3, 2, 23, 15)
    assert when("every day 00:45").next_after(moment, BERLIN) == utc(2026, 3, 1, 23, 45)
    assert when("every day 23:45").next_after(utc(2026, 3, 1, 22, 30), BERLIN) == utc(
        2026, 3, 1, 22, 45
    )


def test_weekly_next_after():
    monday = when("every monday 09:00")
    assert monday.next_after(NOW, BERLIN) == utc(2026, 3, 2, 8)
    assert monday.next_after(utc(2026, 3, 2, 8), BERLIN) == utc(2026, 3, 9, 8)
    sunday = when("every sunday 10:00")  # earlier today (Sunday): next week
    assert sunday.next_after(NOW, BERLIN) == utc(2026, 3, 8, 9)
    assert when("every sunday 12:00").next_after(NOW, BERLIN) == utc(2026, 3, 1, 11)


def test_weekdays_skip_the_weekend():
    weekdays = when("every weekday 09:00")
    runs, moment = [], utc(2026, 3, 5, 12)  # Thursday afternoon
    for _ in range(4):
        moment = weekdays.next_after(moment, BERLIN)
        runs.append(moment)
    assert runs == [
        utc(2026, 3, 6, 8),
        utc(2026, 3, 9, 8),
        utc(2026, 3, 10, 8),
        utc(2026, 3, 11, 8),
    ]
    assert [run.astimezone(BERLIN).strftime("%a") for run in runs] == ["Fri", "Mon", "Tue", "Wed"]


def test_wall_clock_stays_local_across_spring_forward():
    daily = when("every day 09:00")
    before = daily.next_after(utc(2026, 3, 28, 0), BERLIN)
    after = daily.next_after(before, BERLIN)
    assert (before, after) == (utc(2026, 3, 28, 8), utc(2026, 3, 29, 7))  # UTC+1, then UTC+2
    assert before.astimezone(BERLIN).hour == after.astimezone(BERLIN).hour == 9
    assert after - before == timedelta(hours=23)
    monday = when("every monday 09:00")
    assert monday.next_after(utc(2026, 3, 23, 8), BERLIN) == utc(2026, 3, 30, 7)


def test_wall_clock_stays_local_across_fall_back():
    daily = when("every weekday 09:00")
    friday = daily.next_after(utc(2026, 10, 23, 0), BERLIN)
    monday = daily.next_after(friday, BERLIN)
    assert (friday, monday) == (utc(2026, 10, 23, 7), utc(2026, 10, 26, 8))
    assert friday.utcoffset() == monday.utcoffset() == timedelta(0)  # UTC out
    assert friday.astimezone(BERLIN).utcoffset() == timedelta(hours=2)
    assert monday.astimezone(BERLIN).utcoffset() == timedelta(hours=1)


def test_daily_time_in_the_gap_runs_at_the_jump_that_day():
    daily = when("every day 02:30")
    runs = [daily.next_after(utc(2026, 3, 28, 12), BERLIN)]
    runs.append(daily.next_after(runs[-1], BERLIN))
    assert runs == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]
    assert [run.astimezone(BERLIN).strftime("%H:%M") for run in runs] == ["03:00", "02:30"]


def test_daily_time_in_the_overlap_runs_once():
    daily = when("every day 02:30")
    first = daily.next_after(utc(2026, 10, 24, 12), BERLIN)
    assert first == utc(2026, 10, 25, 0, 30)  # the CEST 02:30
    assert daily.next_after(first, BERLIN) == utc(2026, 10, 26, 1, 30)  # not the CET 02:30


def test_gap_of_half_an_hour():
    # Lord Howe Island moves its clocks by 30 minutes: 02:00 -> 02:30 on 4 October 2026.
    zone = ZoneInfo("Australia/Lord_Howe")
    daily = when("every day 02:15", tz=zone)
    run = daily.next_after(datetime(2026, 10, 3, 12, tzinfo=zone), zone)
    assert run.astimezone(zone).replace(tzinfo=None) == datetime(2026, 10, 4, 2, 30)


@pytest.mark.parametrize("clock", ["00:00", "02:00", "02:30", "02:59", "03:00", "09:00", "23:59"])
def test_daily_runs_once_a_day_through_both_dst_changes(clock):
    daily = when(f"every day {clock}")
    for start in (utc(2026, 3, 27), utc(2026, 10, 23)):
        runs = [daily.next_after(start, BERLIN)]
        for _ in range(4):
            runs.append(daily.next_after(runs[-1], BERLIN))
        local = [run.astimezone(BERLIN) for run in runs]
        assert [run.date() for run in local] == [
            local[0].date() + timedelta(days=i) for i in range(5)
        ]
        spring_gap = clock.startswith("02:") and start.month == 3
        expected = {clock, "03:00"} if spring_gap else {clock}
        assert {run.strftime("%H:%M") for run in local} == expected


# Intervals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised", "first"),
    [
        ("every 2h", "every 2h from 2026-03-01 13:00", utc(2026, 3, 1, 12)),
        ("every 30m", "every 30m from 2026-03-01 11:30", utc(2026, 3, 1, 10, 30)),
        ("every 1m", "every 1m from 2026-03-01 11:01", utc(2026, 3, 1, 10, 1)),
        ("every 90s", "every 1m30s from 2026-03-01 11:01:30", utc(2026, 3, 1, 10, 1, 30)),
        ("every 90m", "every 1h30m from 2026-03-01 12:30", utc(2026, 3, 1, 11, 30)),
        ("every 2 hours", "every 2h from 2026-03-01 13:00", utc(2026, 3, 1, 12)),
        ("every 1d", "every 1d from 2026-03-02 11:00", utc(2026, 3, 2, 10)),
    ],
)
def test_interval_counts_from_creation(text, normalised, first):
    schedule = when(text)
    assert schedule == Schedule(normalised, recurring=True)
    assert schedule.next_after(NOW, BERLIN) == first
    assert parse_schedule(schedule.text, NOW + timedelta(hours=5), BERLIN) == schedule


def test_interval_next_after():
    schedule = when("every 2h")
    assert schedule.next_after(utc(2026, 3, 1, 12), BERLIN) == utc(2026, 3, 1, 14)  # strictly
    assert schedule.next_after(utc(2026, 3, 1, 13, 59), BERLIN) == utc(2026, 3, 1, 14)
    assert schedule.next_after(utc(2026, 3, 5, 3, 1), BERLIN) == utc(2026, 3, 5, 4)
    assert schedule.next_after(utc(2026, 2, 1), BERLIN) == utc(2026, 3, 1, 12)


def test_interval_from_a_given_start():
    schedule, used = parse_when("every 1h from 2026-03-01 09:00 all hi".split(), NOW, BERLIN)
    assert used == 5
    assert schedule.text == "every 1h from 2026-03-01 09:00"
    assert schedule.next_after(NOW, BERLIN) == utc(2026, 3, 1, 11)
    future = when("every 1d from 2026-03-10T07:00")
    assert future.next_after(NOW, BERLIN) == utc(2026, 3, 10, 6)  # the start is the first run


def test_interval_counts_elapsed_time_across_dst():
    schedule = when("every 2h from 2026-03-29 00:00", now=utc(2026, 3, 28))
    runs = [schedule.next_after(utc(2026, 3, 28, 22), BERLIN)]
    for _ in range(2):
        runs.append(schedule.next_after(runs[-1], BERLIN))
    assert runs == [utc(2026, 3, 28, 23), utc(2026, 3, 29, 1), utc(2026, 3, 29, 3)]
    local = [run.astimezone(BERLIN).strftime("%H:%M") for run in runs]
    assert local == ["00:00", "03:00", "05:00"]  # the lost hour is skipped, not the interval


# parse_when word counts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "used"),
    [
        (["every", "monday", "09:00", "#room:x", "hello", "world"], 3),
        (["every", "monday", "at", "09:00", "#room:x", "hello"], 4),
        (["every", "weekday", "09:00", "all", "hello"], 3),
        (["every", "2h", "!abc:x", "hello"], 2),
        (["every", "2", "hours", "all", "hi"], 3),
        (["in", "2h", "#room:x", "hello"], 2),
        (["in", "1h", "30m", "#room:x", "hello"], 3),
        (["in", "2", "hours", "all", "5", "m"], 3),
        (["at", "2026-12-24", "18:00", "#room:x", "ho", "ho"], 3),
        (["at", "2026-12-24T18:00", "all", "ho"], 2),
        (["at", "18:00", "#room:x", "2h", "early"], 2),
        (["every", "day", "08:30", "all"], 3),
    ],
)
def test_parse_when_reports_the_words_it_used(words, used):
    assert parse_when(words, NOW, BERLIN)[1] == used


def test_parse_when_leaves_the_room_and_message_alone():
    words = ["in", "2h", "#Room:X", "Hello", "World"]
    parse_when(words, NOW, BERLIN)
    assert words == ["in", "2h", "#Room:X", "Hello", "World"]


# Re-reading stored text ----------------------------------------------------------------------------


def test_parse_schedule_tolerates_case_and_spaces():
    assert parse_schedule("  EVERY   Monday \t 09:00 ", NOW, BERLIN).text == "every monday 09:00"


def test_parse_schedule_accepts_every_form_and_normalises_it():
    assert parse_schedule("in 2h", NOW, BERLIN).text == "at 2026-03-01 13:00"
    assert parse_schedule("every 2h", NOW, BERLIN).text == "every 2h from 2026-03-01 13:00"


def test_parse_schedule_refuses_trailing_words():
    with pytest.raises(ScheduleError, match="after the time: '#room hello'"):
        parse_schedule("every day 08:30 #room hello", NOW, BERLIN)


def test_a_schedule_made_from_stored_text_works_directly():
    schedule = Schedule("every monday 09:00", recurring=True)
    assert schedule.next_after(NOW, BERLIN) == utc(2026, 3, 2, 8)
    assert Schedule("at 2026-10-25 02:30+01:00", False).next_after(NOW, BERLIN) == utc(
        2026, 10, 25, 1, 30
    )
    with pytest.raises(ScheduleError, match="relative to now"):
        Schedule("in 2h", recurring=False).next_after(NOW, BERLIN)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="time zone"):
        parse_when(["in", "2h"], datetime(2026, 3, 1, 10), BERLIN)
    with pytest.raises(ValueError, match="time zone"):
        when("every day 08:30").next_after(datetime(2026, 3, 1, 10), BERLIN)


# Descriptions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tz", "description"),
    [
        ("at 2026-12-24 18:00", BERLIN, "once on Thu 24 Dec 2026 18:00 (Europe/Berlin)"),
        ("in 90s", BERLIN, "once on Sun 1 Mar 2026 11:01:30 (Europe/Berlin)"),
        ("every monday 09:00", UTC_ZONE, "every Monday at 09:00 (UTC)"),
        ("every day 08:30", BERLIN, "every day at 08:30 (Europe/Berlin)"),
        ("every weekday 09:00", BERLIN, "every weekday (Mon–Fri) at 09:00 (Europe/Berlin)"),
        ("every 1h", UTC_ZONE, "every hour from Sun 1 Mar 2026 11:00 (UTC)"),
        ("every 90m", UTC_ZONE, "every 1 hour 30 minutes from Sun 1 Mar 2026 11:30 (UTC)"),
        ("every 2d", UTC_ZONE, "every 2 days from Tue 3 Mar 2026 10:00 (UTC)"),
    ],
)
def test_describe(text, tz, description):
    assert when(text, tz=tz).describe(tz) == description


# missed_run -------------------------------------------------------------------------------------------


def test_missed_run_thresholds():
    grace = timedelta(hours=1)
    due = utc(2026, 3, 1, 12)
    assert missed_run(due, due - timedelta(seconds=1), grace) == "wait"
    assert missed_run(due, due, grace) == "run"
    assert missed_run(due, due + timedelta(minutes=59), grace) == "run"
    assert missed_run(due, due + grace, grace) == "run"
    assert missed_run(due, due + grace + timedelta(seconds=1), grace) == "skip"
    assert missed_run(due, due + timedelta(days=3), grace) == "skip"
    assert missed_run(due, due + timedelta(seconds=1), timedelta(0)) == "skip"


# Friendly errors ----------------------------------------------------------------------------------------


HINT = "use in 2h, at 2026-12-24 18:00, every day 08:30 or every monday 09:00"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("next tuesday #room:x hello", f"I don't understand 'next tuesday': {HINT}"),
        ("tomorrow all hello", f"I don't understand 'tomorrow': {HINT}"),
        ("", f"Tell me when: {HINT}"),
        ("at 24:00", "'24:00' is not a time of day: use 00:00 to 23:59"),
        ("at 25:61", "'25:61' is not a time of day: use 00:00 to 23:59"),
        ("at 12:60", "'12:60' is not a time of day: use 00:00 to 23:59"),
        ("every day 24:00", "'24:00' is not a time of day: use 00:00 to 23:59"),
        ("at 2026-12-24 25:00", "'25:00' is not a time of day: use 00:00 to 23:59"),
        ("at 9am", "'9am' is not a time of day: use 24-hour HH:MM, e.g. 09:00 or 18:30"),
        ("every monday 9", "'9' is not a time of day: use 24-hour HH:MM, e.g. 09:00 or 18:30"),
        ("at 2026-13-01 10:00", "'2026-13-01' is not a date: months go from 01 to 12"),
        ("at 2026-00-10 10:00", "'2026-00-10' is not a date: months go from 01 to 12"),
        ("at 2026-02-30 10:00", "'2026-02-30' is not a date: that month has no day 30"),
        ("at 2026-13-01T10:00", "'2026-13-01' is not a date: months go from 01 to 12"),
        ("at 24/12/2026 18:00", "'24/12/2026' is not a date: use YYYY-MM-DD, e.g. 2026-12-24"),
        ("at 2026-12-24 #room", "'at 2026-12-24' needs a time too, e.g. at 2026-12-24 18:00"),
        ("at", "'at' needs a time, e.g. at 18:00 or at 2026-12-24 18:00"),
        ("at noon all", "'at' needs a time, e.g. at 18:00 or at 2026-12-24 18:00"),
        ("every day", "'every day' needs a time of day, e.g. every day 09:00"),
        ("every monday #room hi", "'every monday' needs a time of day, e.g. every monday 09:00"),
        (
            "every fortnight 09:00",
            "I don't understand 'every fortnight 09:00': use every day 08:30, every monday 09:00,"
            " every weekday 09:00 or every 2h",
        ),
        ("every", "I don't understand 'every': use every day 08:30"),
        ("every 30s", "'every 30s' is too often: the shortest interval is 1 minute"),
        ("every 59 seconds", "'every 59 seconds' is too often: the shortest interval is 1 minute"),
        ("every 400d", "'every 400d' is too far apart: the longest interval is 366 days"),
        ("every 2h from", "'every 2h from' needs a time, e.g. every 2h from 18:00"),
        ("in soon", "I don't understand 'in soon': use in 2h, in 30m, in 1d or in 1h30m"),
        ("in", "I don't understand 'in': use in 2h"),
        ("in 2x", "I don't understand 'in 2x': use in 2h"),
        ("in 1h30", "I don't understand 'in 1h30': use in 2h"),
        ("in ²h", "I don't understand 'in ²h': use in 2h"),
        ("in 0m", "'in 0m' is now: give a delay, e.g. in 30m"),
        ("in 99999999d", "'in 99999999d' is too far ahead: I can schedule up to 10 years ahead"),
        ("in 1234567890123456789h", "I don't understand 'in 1234567890123456789h'"),
        ("at 2026-12-24T18:00+25:00", "'18:00+25:00' has an impossible UTC offset"),
    ],
)
def test_bad_input_gets_a_friendly_message(text, message):
    assert problem(text).startswith(message)


def test_every_error_is_a_value_error():
    assert issubclass(ScheduleError, ValueError)
