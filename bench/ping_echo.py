"""`!ping` round trip of the bot against a raw matrix-nio echo bot on the same Synapse, interleaved in
one run. Target (issue #10): bot p50 / echo bot p50 <= 1.10.

The bot runs as in production, `community-bot run` in a process of its own (encryption on, SQLite
store); the echo bot (bench/echo_bot.py, encryption on too) likewise. One member, a plain client
in this process, has a DM with each and pings them in turn: a round trip runs from sending
`!ping` until the reply to it is in the member's client.

Run alone: ``.venv/bin/python bench/ping_echo.py [--rounds N]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BotProcess,
    EchoBot,
    Outcome,
    RoundTrip,
    cpu_seconds,
    echo_spec,
    log_in,
    median,
    open_dm,
    p50_p95,
    percentile,
    quiet_logging,
    register,
    report,
    round_trip,
    split,
    write_bot_config,
)
from tests.harness.synapse import SynapseServer

NAME = "ping vs echo bot"
METRIC = "!ping p50 bot / echo bot"
TARGET = 1.10
ROUNDS = 40
WARM_UP = 5


async def measure(workdir: Path, rounds: int) -> Outcome:
    synapse = SynapseServer(workdir / "synapse", relaxed_rate_limits=True)
    await asyncio.to_thread(synapse.start, 60)
    bot = echo = None
    members = []
    try:
        assert synapse.process is not None
        bot_account, echo_account, member_account = await register(synapse, "b", 3)
        config = write_bot_config(workdir / "bot.toml", synapse, bot_account, workdir / "data")
        bot = BotProcess(config, bot_account.user_id, log_path=workdir / "bot.log")
        echo = EchoBot(echo_spec(synapse.base_url, echo_account, workdir / "echo-store"),
                       workdir=workdir)  # fmt: skip
        await asyncio.gather(bot.start(), echo.start())
        members = await log_in(synapse, [member_account])
        member = members[0]
        rooms = {
            "bot": (await open_dm(member, bot.user_id), bot.user_id),
            "echo": (await open_dm(member, echo.user_id), echo.user_id),
        }
        for _ in range(WARM_UP):
            for room, responder in rooms.values():
                await round_trip(member, room, responder)
        trips: dict[str, list[RoundTrip]] = {"bot": [], "echo": []}
        pids = {"Synapse": synapse.process.pid, "bot": bot.pid, "echo bot": echo.pid}
        cpu = {what: cpu_seconds(pid) for what, pid in pids.items()}
        started = time.monotonic()
        for i in range(rounds):
            order = ("bot", "echo") if i % 2 == 0 else ("echo", "bot")  # neither always first
            for who in order:
                room, responder = rooms[who]
                trips[who].append(await round_trip(member, room, responder))
        wall = time.monotonic() - started
        cpu = {what: cpu_seconds(pids[what]) - before for what, before in cpu.items()}
        problems = bot.problems()
    finally:
        await asyncio.gather(*(m.close() for m in members), return_exceptions=True)
        for process in (bot, echo):
            if process is not None:
                await process.close()
        await asyncio.to_thread(synapse.stop)

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
            ("CPU during the rounds", ", ".join(f"{w} {s:.2f} s" for w, s in cpu.items())
             + f" (in {wall:.1f} s)"),
            ("bot log lines at warning and above",
             ", ".join(f"{k} x{n}" for k, n in problems.most_common(5)) or "none"),
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


async def _in_tempdir(rounds: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="bench-ping-") as tmp:
        async with asyncio.timeout(600):
            return await measure(Path(tmp), rounds)


def run(rounds: int = ROUNDS) -> Outcome:
    quiet_logging()
    try:
        return asyncio.run(_in_tempdir(rounds))
    except Exception as problem:
        return Outcome(NAME, METRIC, None, TARGET, error=f"{type(problem).__name__}: {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    outcome = run(parser.parse_args(argv).rounds)
    print(report(outcome))
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
