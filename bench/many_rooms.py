"""`!ping` round trip of a bot in 300 rooms against the same bot in 10 rooms, interleaved in one
run. Target (issue #10): p50 in 300 rooms / p50 in 10 rooms <= 1.10.

Two bots run side by side, each as in production (`community-bot run`, a process of its own,
encryption on, SQLite store, fresh data directory and account), on the same Synapse (relaxed rate
limits). Before they start, an owner creates 299 and 9 public rooms (the kind that count as
community rooms), invites the bot and the bot's account joins them (through the client API with
the account's registration token: the bot itself then starts in its rooms, as after a restart).
One member, a plain client in this process, has a DM with each bot: 300 and 10 rooms. The member
pings the two in turn (neither always first); a round trip runs from sending `!ping` until the
reply to it is in the member's client.

Run alone: ``.venv/bin/python bench/many_rooms.py [--rooms N] [--few N] [--rounds N]``."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    BotProcess,
    Outcome,
    Target,
    bench_main,
    bot_process,
    close_all,
    counted,
    cpu_text,
    log_in,
    median,
    memory_kib,
    mib,
    open_dm,
    p50_p95,
    percentile,
    register,
    rounds_in_turn,
    run_benchmark,
    running_synapse,
    seconds,
    split,
)
from tests.harness.synapse import MatrixAccount

NAME = "many rooms"
ROOMS = 300
FEW = 10
ROUNDS = 40
WARM_UP = 5
TARGET = 1.10
PARALLEL = 8  # room creations and joins in flight


def metric(rooms: int, few: int) -> str:
    return f"!ping p50 in {rooms} rooms / in {few}"


async def _rooms_for(http: httpx.AsyncClient, owner: MatrixAccount, bot: MatrixAccount,
                     count: int, label: str) -> None:  # fmt: skip
    """`count` public rooms of the owner's that the bot's account has joined."""
    limit = asyncio.Semaphore(PARALLEL)

    async def one(i: int) -> None:
        async with limit:
            created = await http.post(
                "/_matrix/client/v3/createRoom",
                headers={"Authorization": f"Bearer {owner.access_token}"},
                json={"preset": "public_chat", "name": f"{label} {i + 1}", "invite": [bot.user_id]},
            )
            created.raise_for_status()
            joined = await http.post(
                f"/_matrix/client/v3/join/{created.json()['room_id']}",
                headers={"Authorization": f"Bearer {bot.access_token}"},
                json={},
            )
            joined.raise_for_status()

    await asyncio.gather(*(one(i) for i in range(count)))


async def measure(workdir: Path, rooms: int, few: int, rounds: int) -> Outcome:
    async with running_synapse(workdir) as synapse:
        bots: dict[str, BotProcess] = {}
        members = []
        try:
            assert synapse.process is not None
            many_account, few_account, owner, member_account = await register(synapse, "r", 4)
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=synapse.base_url, timeout=120) as http:
                await _rooms_for(http, owner, many_account, rooms - 1, "many")
                await _rooms_for(http, owner, few_account, few - 1, "few")
            rooms_s = time.monotonic() - started
            for key, account in (("many", many_account), ("few", few_account)):
                bots[key] = bot_process(synapse, account, workdir, name=key,
                                        data_dir=workdir / f"data-{key}")  # fmt: skip
            ready = await asyncio.gather(*(b.start(ready_timeout=180) for b in bots.values()))
            ready_s = {key: line.monotonic - b.launched_monotonic
                       for (key, b), line in zip(bots.items(), ready, strict=True)}  # fmt: skip
            members = await log_in(synapse, [member_account])
            member = members[0]
            targets = {key: Target(await open_dm(member, b.user_id), b.user_id)
                       for key, b in bots.items()}  # fmt: skip
            pids = {"Synapse": synapse.process.pid,
                    **{f"bot in {key}": b.pid for key, b in bots.items()}}  # fmt: skip
            done = await rounds_in_turn(member, targets, rounds, warm_up=WARM_UP, cpu_of=pids)
            rss = {key: memory_kib(b.pid)["VmRSS"] for key, b in bots.items()}
            problems = {key: b.problems() for key, b in bots.items()}
        finally:
            await close_all(members, *bots.values())

    trips = done.trips
    times = {key: [t.total for t in ts] for key, ts in trips.items()}
    ratio = median(times["many"]) / median(times["few"])
    label = {"many": f"{rooms} rooms", "few": f"{few} rooms"}
    details = [
        ("rounds", f"{rounds} each, interleaved (after {WARM_UP} warm-up each)"),
        ("setting up the rooms (create + join)", seconds(rooms_s)),
    ]
    for key in ("many", "few"):
        details += [
            (f"bot in {label[key]}: p50 / p95", p50_p95(times[key])),
            ("  split p50", split(trips[key])),
            ("  launch -> bot.ready", seconds(ready_s[key])),
            ("  RSS after the rounds", mib(rss[key])),
            ("  log lines at warning and above", counted(problems[key].most_common(4))),
        ]  # fmt: skip
    details += [
        ("ratio p95", f"{percentile(times['many'], 95) / percentile(times['few'], 95):.3f}"),
        ("CPU during the rounds", cpu_text(done.cpu)),
    ]
    pongs = all(t.body.startswith("Pong!") for ts in trips.values() for t in ts)
    return Outcome(
        NAME, metric(rooms, few), ratio, TARGET, details=details,
        notes=[
            "round trip = the member sends !ping in their DM until the reply to it is in their "
            "client; the rooms count the DM; the other rooms are public and quiet",
            "split from the homeserver's origin_server_ts: to homeserver, handling (command "
            "created -> reply created), back",
        ],
        extra_checks=[("every reply is a pong", pongs)],
    )  # fmt: skip


def run(rooms: int = ROOMS, few: int = FEW, rounds: int = ROUNDS) -> Outcome:
    failed = Outcome(NAME, metric(rooms, few), None, TARGET)
    return run_benchmark(
        measure, rooms, few, rounds, prefix="bench-rooms-", timeout=900, failed=failed
    )


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, argv, rooms=ROOMS, few=FEW, rounds=ROUNDS)


if __name__ == "__main__":
    sys.exit(main())
