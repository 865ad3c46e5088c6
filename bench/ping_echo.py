"""`!ping` round trip of the bot against a raw matrix-nio echo bot on the same Synapse, interleaved in
one run. Target (issue #10): bot p50 / echo bot p50 <= 1.10.

The bot runs as in production, `community-bot run` in a process of its own (encryption on, SQLite
store); the echo bot (bench/echo_bot.py, encryption on too) likewise. One member, a plain client
in this process, has a DM with each and pings them in turn: a round trip runs from sending
`!ping` until the reply to it is in the member's client.

Run alone: ``.venv/bin/python bench/ping_echo.py [--rounds N]``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Outcome,
    Target,
    bench_main,
    bot_process,
    close_all,
    counted,
    cpu_text,
    echo_process,
    log_in,
    median,
    open_dm,
    p50_p95,
    percentile,
    register,
    rounds_in_turn,
    run_benchmark,
    running_synapse,
    split,
)

NAME = "ping vs echo bot"
METRIC = "!ping p50 bot / echo bot"
TARGET = 1.10
ROUNDS = 40
WARM_UP = 5


async def measure(workdir: Path, rounds: int) -> Outcome:
    async with running_synapse(workdir) as synapse:
        bot = echo = None
        members = []
        try:
            assert synapse.process is not None
            bot_account, echo_account, member_account = await register(synapse, "b", 3)
            bot = bot_process(synapse, bot_account, workdir)
            echo = echo_process(synapse, echo_account, workdir)
            await asyncio.gather(bot.start(), echo.start())
            members = await log_in(synapse, [member_account])
            member = members[0]
            targets = {
                "bot": Target(await open_dm(member, bot.user_id), bot.user_id),
                "echo": Target(await open_dm(member, echo.user_id), echo.user_id),
            }
            pids = {"Synapse": synapse.process.pid, "bot": bot.pid, "echo bot": echo.pid}
            done = await rounds_in_turn(member, targets, rounds, warm_up=WARM_UP, cpu_of=pids)
            problems = bot.problems()
        finally:
            await close_all(members, bot, echo)

    trips = done.trips
    bot_times = [t.total for t in trips["bot"]]
    echo_times = [t.total for t in trips["echo"]]
    ratio = median(bot_times) / median(echo_times)
    pongs = all(t.body.startswith("Pong!") for t in trips["bot"])
    return Outcome(
        NAME, METRIC, ratio, TARGET,
        details=[
            ("rounds", f"{rounds} each, interleaved (after {WARM_UP} warm-up each)"),
            ("bot p50 / p95", p50_p95(bot_times)),
            ("echo bot p50 / p95", p50_p95(echo_times)),
            ("ratio p50", f"{ratio:.3f}"),
            ("ratio p95", f"{percentile(bot_times, 95) / percentile(echo_times, 95):.3f}"),
            ("bot split p50", split(trips["bot"])),
            ("echo bot split p50", split(trips["echo"])),
            ("CPU during the rounds", cpu_text(done.cpu) + f" (in {done.wall:.1f} s)"),
            ("bot log lines at warning and above", counted(problems.most_common(5))),
        ],
        notes=[
            "round trip = the member sends !ping until the reply to it is in their client",
            "split from the homeserver's origin_server_ts: to homeserver = command created, "
            "handling = command created -> reply created (sync, work, send), back = reply "
            "created -> seen by the member",
            "both are processes of their own with encryption on (plain DMs); the member's client "
            "runs in the benchmark's process",
        ],
        extra_checks=[("every bot reply is a pong", pongs)],
    )  # fmt: skip


def run(rounds: int = ROUNDS) -> Outcome:
    failed = Outcome(NAME, METRIC, None, TARGET)
    return run_benchmark(measure, rounds, prefix="bench-ping-", timeout=600, failed=failed)


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, argv, rounds=ROUNDS)


if __name__ == "__main__":
    sys.exit(main())
