"""Memory of the bot process: its RSS when idle, 10 s after it said it was ready (target <= 120 MiB,
an absolute budget), and how much it grows over 500 `!ping` commands (target <= 5 %).

The bot runs as in production: `community-bot run` in a process of its own, encryption on, SQLite
store, a fresh data directory and account. The figures are the process's VmRSS from
/proc/<pid>/status (resident memory, shared libraries included: what the operator's monitoring
shows). Five members (plain clients in this process) have invited the bot to a DM before it
starts; it joins them while starting.

* idle: 10 s after the `bot.ready` log line, with nothing happening (the background warm-up done);
* growth: the five members then send 100 `!ping` each, one after another each, the five at once
  (500 commands, every one answered). RSS is read after the first 50, right after the 500, and 2 s
  later; growth = (2 s after the 500 - idle) / idle. The growth from the 50th to the 500th command
  tells a leak (it keeps growing) from a one-off (the first commands load what they need).

Run alone: ``.venv/bin/python bench/memory.py [--commands N]``."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Figure,
    Outcome,
    RoundTrip,
    bench_main,
    bot_process,
    close_all,
    counted,
    log_in,
    memory_kib,
    mib,
    p50_p95,
    register,
    round_trip,
    run_benchmark,
    running_synapse,
)
from tests.harness.matrix_user import TestUser

NAME = "memory"
METRIC = "idle RSS 10 s after ready"
TARGET_MIB = 120.0
GROWTH_METRIC = "RSS growth after 500 !ping"
TARGET_GROWTH_PCT = 5.0
MEMBERS = 5
COMMANDS = 500
IDLE_S = 10.0


async def _pings(member: TestUser, room: str, bot_id: str, count: int) -> list[RoundTrip]:
    return [await round_trip(member, room, bot_id) for _ in range(count)]


async def _all_ping(
    members: list[TestUser], rooms: list[str], bot_id: str, each: int
) -> list[RoundTrip]:
    pairs = zip(members, rooms, strict=True)
    results = await asyncio.gather(*(_pings(m, r, bot_id, each) for m, r in pairs))
    return [trip for trips in results for trip in trips]


async def measure(workdir: Path, commands: int) -> Outcome:
    async with running_synapse(workdir) as synapse:
        bot = None
        members = []
        try:
            bot_account, *accounts = await register(synapse, "m", 1 + MEMBERS)
            bot = bot_process(synapse, bot_account, workdir)
            members = await log_in(synapse, accounts)
            rooms = [await m.create_room(invite=[bot.user_id], is_direct=True) for m in members]
            ready = await bot.start()
            at_ready = memory_kib(bot.pid)
            for member, room in zip(members, rooms, strict=True):
                await member.wait_for_membership(room, bot.user_id, "join", timeout=60)
            await asyncio.sleep(max(0.0, ready.monotonic + IDLE_S - time.monotonic()))
            idle = memory_kib(bot.pid)
            each = commands // MEMBERS
            first_each = max(1, each // 10)
            trips = await _all_ping(members, rooms, bot.user_id, first_each)
            after_first = memory_kib(bot.pid)
            trips += await _all_ping(members, rooms, bot.user_id, each - first_each)
            right_after = memory_kib(bot.pid)
            await asyncio.sleep(2.0)
            after = memory_kib(bot.pid)
            problems = bot.problems()
        finally:
            await close_all(members, bot)

    rss_idle = idle["VmRSS"]
    growth = (after["VmRSS"] - rss_idle) / rss_idle * 100
    steady = (after["VmRSS"] - after_first["VmRSS"]) / after_first["VmRSS"] * 100
    pongs = sum(t.body.startswith("Pong!") for t in trips)

    def breakdown(values: dict[str, int]) -> str:
        return (f"{mib(values['VmRSS'])} (anon {mib(values['RssAnon'])}, "
                f"file {mib(values['RssFile'])}, peak {mib(values['VmHWM'])})")  # fmt: skip

    return Outcome(
        NAME, METRIC, rss_idle / 1024, TARGET_MIB, unit="MiB", fmt=".1f",
        figures=[Figure(f"RSS growth after {len(trips)} !ping", growth, TARGET_GROWTH_PCT,
                        unit="%", fmt=".2f")],
        details=[
            ("RSS at bot.ready", breakdown(at_ready)),
            (f"RSS {IDLE_S:.0f} s after ready (idle)", breakdown(idle)),
            (f"RSS after {first_each * MEMBERS} commands", breakdown(after_first)),
            (f"RSS right after {len(trips)} commands", breakdown(right_after)),
            (f"RSS 2 s after {len(trips)} commands", breakdown(after)),
            ("growth idle -> 2 s after", f"{growth:+.2f} %"),
            (f"growth after {first_each * MEMBERS} -> after {len(trips)}", f"{steady:+.2f} %"),
            ("commands answered with a pong", f"{pongs} of {len(trips)}"),
            ("round trip p50 / p95", p50_p95([t.total for t in trips])),
            ("bot log lines at warning and above", counted(problems.most_common(5))),
        ],
        notes=[
            "VmRSS of the bot's process (/proc/<pid>/status); absolute budgets, not ratios",
            f"{MEMBERS} members ping at once, each one !ping after another; plain DMs, the bot's "
            "encryption on",
        ],
        extra_checks=[("every command answered with a pong", pongs == len(trips))],
    )  # fmt: skip


def run(commands: int = COMMANDS) -> Outcome:
    failed = Outcome(NAME, METRIC, None, TARGET_MIB, unit="MiB",
                     figures=[Figure(GROWTH_METRIC, None, TARGET_GROWTH_PCT, unit="%")])  # fmt: skip
    return run_benchmark(measure, commands, prefix="bench-memory-", timeout=600, failed=failed)


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, argv, commands=COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
