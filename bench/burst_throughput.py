"""Command throughput in a burst: 20 members send 10 `!ping` each, all at once; the bot's throughput
(commands answered per second) against a raw matrix-nio echo bot's in the same situation, same
run. Target (issue #10): bot / echo bot >= 0.95.

The bot runs as in production (`community-bot run`, a process of its own, encryption on, SQLite
store); the echo bot (bench/echo_bot.py, encryption on too) likewise. 20 members (plain clients in
this process) each have a DM with both. In a burst, every member sends their 10 pings one after
another without waiting for the replies, the 20 members at once; the burst ends when the last
reply is in its member's client. Throughput = 200 / (last reply seen - burst start).

Bursts alternate between the bot and the echo bot (bot first, then echo first, ...), three each,
with a second of quiet between them; the figure is the ratio of the median throughputs.

Run alone: ``.venv/bin/python bench/burst_throughput.py [--members N] [--pings N] [--bursts N]``."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CpuMeter,
    Outcome,
    bench_main,
    bot_process,
    close_all,
    counted,
    cpu_medians,
    echo_process,
    is_reply_to,
    log_in,
    open_dm,
    p50_p95,
    register,
    round_trip,
    run_benchmark,
    running_synapse,
)
from tests.harness.matrix_user import TestUser

NAME = "burst throughput"
METRIC = "commands/s bot / echo bot"
TARGET = 0.95  # at least
MEMBERS = 20
PINGS = 10
BURSTS = 3
REPLY_TIMEOUT_S = 180.0


@dataclass
class Burst:
    who: str
    commands: int
    wall: float
    latencies: list[float]  # each command, from its sending until its reply was seen
    pongs: int
    cpu: dict[str, float]  # CPU seconds used during the burst, by process

    @property
    def throughput(self) -> float:
        return self.commands / self.wall


async def _member_burst(
    user: TestUser, room: str, responder: str, pings: int
) -> list[tuple[float, float, str]]:
    sent = []
    for _ in range(pings):
        started = time.monotonic()
        sent.append((started, await user.send_text(room, "!ping")))
    results = []
    for started, event_id in sent:
        reply = await user.wait_for_event(
            room, lambda e, i=event_id: is_reply_to(e, responder, i), REPLY_TIMEOUT_S,
            after_event_id=event_id,
        )  # fmt: skip
        results.append((started, time.monotonic(), str(reply["content"].get("body", ""))))
    return results


async def _burst(
    who: str, members: list[TestUser], rooms: list[str], responder: str, pings: int,
    pids: dict[str, int],
) -> Burst:  # fmt: skip
    cpu = CpuMeter({**pids, "members' clients": time.process_time})
    started = time.monotonic()
    per_member = await asyncio.gather(
        *(_member_burst(m, r, responder, pings) for m, r in zip(members, rooms, strict=True))
    )
    results = [r for rs in per_member for r in rs]
    wall = max(seen for _, seen, _ in results) - started
    return Burst(
        who, len(results), wall, [seen - sent for sent, seen, _ in results],
        sum(body.startswith("Pong!") for _, _, body in results), cpu.used(),
    )  # fmt: skip


async def measure(workdir: Path, members_count: int, pings: int, bursts: int) -> Outcome:
    async with running_synapse(workdir) as synapse:
        bot = echo = None
        members = []
        try:
            assert synapse.process is not None
            bot_account, echo_account, *accounts = await register(synapse, "t", 2 + members_count)
            bot = bot_process(synapse, bot_account, workdir)
            echo = echo_process(synapse, echo_account, workdir)
            await asyncio.gather(bot.start(), echo.start())
            members = await log_in(synapse, accounts)
            targets = {"bot": bot.user_id, "echo": echo.user_id}
            rooms: dict[str, list[str]] = {}
            for who, responder in targets.items():
                rooms[who] = list(await asyncio.gather(*(open_dm(m, responder) for m in members)))
                # Warm-up: every DM answered once.
                await asyncio.gather(*(
                    round_trip(m, r, responder) for m, r in zip(members, rooms[who], strict=True)
                ))  # fmt: skip
            pids = {"Synapse": synapse.process.pid, "bot": bot.pid, "echo bot": echo.pid}
            done: list[Burst] = []
            for i in range(bursts):
                for who in ("bot", "echo") if i % 2 == 0 else ("echo", "bot"):
                    await asyncio.sleep(1.0)
                    done.append(await _burst(who, members, rooms[who], targets[who], pings, pids))
            problems = bot.problems()
        finally:
            await close_all(members, bot, echo)

    of = {who: [b for b in done if b.who == who] for who in ("bot", "echo")}
    throughput = {who: statistics.median(b.throughput for b in bs) for who, bs in of.items()}
    ratio = throughput["bot"] / throughput["echo"]
    commands = members_count * pings
    details = [("burst", f"{members_count} members x {pings} !ping at once, {bursts} each")]
    for who, label in (("bot", "bot"), ("echo", "echo bot")):
        bs = of[who]
        details += [
            (f"{label} throughput", ", ".join(f"{b.throughput:.1f}" for b in bs)
             + f" commands/s (median {throughput[who]:.1f})"),
            (f"{label} burst wall time", ", ".join(f"{b.wall:.2f}" for b in bs) + " s"),
            (f"{label} latency p50 / p95", p50_p95([x for b in bs for x in b.latencies])),
            (f"{label} CPU per burst", cpu_medians([b.cpu for b in bs]) + " (medians)"),
        ]  # fmt: skip
    pongs_ok = all(b.pongs == b.commands for b in of["bot"])
    details.append(("bot log lines at warning and above", counted(problems.most_common(5))))
    return Outcome(
        NAME, METRIC, ratio, TARGET, at_least=True, details=details,
        notes=[
            f"throughput = {commands} / (last reply seen - burst start); each member sends its "
            "pings back to back without waiting, the members at once",
            "both are processes of their own with encryption on (plain DMs); the members' "
            "clients run in the benchmark's process",
        ],
        extra_checks=[("every bot reply is a pong", pongs_ok)],
    )  # fmt: skip


def run(members: int = MEMBERS, pings: int = PINGS, bursts: int = BURSTS) -> Outcome:
    failed = Outcome(NAME, METRIC, None, TARGET, at_least=True)
    return run_benchmark(
        measure, members, pings, bursts, prefix="bench-burst-", timeout=900, failed=failed
    )


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, argv, members=MEMBERS, pings=PINGS, bursts=BURSTS)


if __name__ == "__main__":
    sys.exit(main())
