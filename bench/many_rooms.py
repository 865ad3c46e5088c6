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

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    BotProcess,
    Outcome,
    RoundTrip,
    cpu_seconds,
    log_in,
    median,
    memory_kib,
    mib,
    open_dm,
    p50_p95,
    percentile,
    quiet_logging,
    register,
    report,
    round_trip,
    seconds,
    split,
    write_bot_config,
)
from tests.harness.synapse import MatrixAccount, SynapseServer

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
    synapse = SynapseServer(workdir / "synapse", relaxed_rate_limits=True)
    await asyncio.to_thread(synapse.start, 60)
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
            config = write_bot_config(
                workdir / f"{key}.toml", synapse, account, workdir / f"data-{key}"
            )
            bots[key] = BotProcess(config, account.user_id, log_path=workdir / f"{key}.log")
        ready = await asyncio.gather(*(b.start(ready_timeout=180) for b in bots.values()))
        ready_s = {key: line.monotonic - b.launched_monotonic
                   for (key, b), line in zip(bots.items(), ready, strict=True)}  # fmt: skip
        members = await log_in(synapse, [member_account])
        member = members[0]
        dms = {key: await open_dm(member, b.user_id) for key, b in bots.items()}
        for _ in range(WARM_UP):
            for key, b in bots.items():
                await round_trip(member, dms[key], b.user_id)
        pids = {"Synapse": synapse.process.pid, **{f"bot in {key}": b.pid
                                                   for key, b in bots.items()}}  # fmt: skip
        cpu = {what: cpu_seconds(pid) for what, pid in pids.items()}
        trips: dict[str, list[RoundTrip]] = {"many": [], "few": []}
        for i in range(rounds):
            for key in ("many", "few") if i % 2 == 0 else ("few", "many"):
                trips[key].append(await round_trip(member, dms[key], bots[key].user_id))
        cpu = {what: cpu_seconds(pids[what]) - before for what, before in cpu.items()}
        rss = {key: memory_kib(b.pid)["VmRSS"] for key, b in bots.items()}
        problems = {key: b.problems() for key, b in bots.items()}
    finally:
        await asyncio.gather(*(m.close() for m in members), return_exceptions=True)
        for b in bots.values():
            await b.close()
        await asyncio.to_thread(synapse.stop)

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
            ("  log lines at warning and above",
             ", ".join(f"{k} x{n}" for k, n in problems[key].most_common(4)) or "none"),
        ]  # fmt: skip
    details += [
        ("ratio p95", f"{percentile(times['many'], 95) / percentile(times['few'], 95):.3f}"),
        ("CPU during the rounds", ", ".join(f"{w} {s:.2f} s" for w, s in cpu.items())),
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


async def _in_tempdir(rooms: int, few: int, rounds: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="bench-rooms-") as tmp:
        async with asyncio.timeout(900):
            return await measure(Path(tmp), rooms, few, rounds)


def run(rooms: int = ROOMS, few: int = FEW, rounds: int = ROUNDS) -> Outcome:
    quiet_logging()
    try:
        return asyncio.run(_in_tempdir(rooms, few, rounds))
    except Exception as problem:
        return Outcome(
            NAME, metric(rooms, few), None, TARGET, error=f"{type(problem).__name__}: {problem}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=ROOMS)
    parser.add_argument("--few", type=int, default=FEW)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)
    outcome = run(args.rooms, args.few, args.rounds)
    print(report(outcome))
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
