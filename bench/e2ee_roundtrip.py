"""Command round trip in an encrypted DM against a plain DM, with the same bot in the same run:
a member sends `!ping` and waits until the bot's reply is in (and, encrypted, decrypted by) their
client. Target: encrypted p50 / plain p50 <= 1.3."""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Outcome,
    bench_main,
    median,
    percentile,
    run_benchmark,
    running_synapse,
    seconds,
)
from tests.harness.bot import RunningBot, bot_config, write_config
from tests.harness.matrix_user import TestUser

NAME = "e2ee round trip"
METRIC = "encrypted p50 / plain p50"
ROUNDS = 30
TARGET = 1.3


async def _round_trips(user: TestUser, room: str, bot_id: str, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.monotonic()
        ping = await user.send_text(room, "!ping")
        await user.wait_for_message(room, sender=bot_id, after_event_id=ping, timeout=30)
        times.append(time.monotonic() - started)
    return times


async def measure(workdir: Path, rounds: int) -> Outcome:
    async with running_synapse(workdir, start_timeout=30) as synapse:
        bot_account = synapse.fresh_account("bot")
        sections = bot_config(synapse, bot_account, workdir / "data", encryption=True)
        config = write_config(workdir / "config.toml", sections)
        bot = RunningBot(config, bot_account)
        await bot.start()
        try:
            async with await TestUser.login(
                synapse.base_url, synapse.fresh_account("member")
            ) as user:
                rooms = {}
                for kind, encrypted in (("plain", False), ("encrypted", True)):
                    room = await user.create_room(
                        invite=[bot.user_id], is_direct=True, encrypted=encrypted
                    )
                    await user.wait_for_membership(room, bot.user_id, "join", timeout=30)
                    await _round_trips(user, room, bot.user_id, 3)  # warm-up (key sharing, caches)
                    rooms[kind] = room
                # Interleaved, so both see the same machine load.
                plain, encrypted = [], []
                for _ in range(rounds):
                    plain += await _round_trips(user, rooms["plain"], bot.user_id, 1)
                    encrypted += await _round_trips(user, rooms["encrypted"], bot.user_id, 1)
                decrypted = all(
                    user.is_decrypted(e["event_id"]) for e in user.events(rooms["encrypted"])
                    if e["sender"] == bot.user_id and e["type"] == "m.room.message"
                )  # fmt: skip
        finally:
            await bot.stop()
    ratio = median(encrypted) / median(plain)
    return Outcome(
        NAME, METRIC, ratio, TARGET,
        details=[
            ("rounds each", str(rounds)),
            ("plain p50", seconds(median(plain))),
            ("plain p95", seconds(percentile(plain, 95))),
            ("encrypted p50", seconds(median(encrypted))),
            ("encrypted p95", seconds(percentile(encrypted, 95))),
            ("ratio p95", f"{percentile(encrypted, 95) / percentile(plain, 95):.3f}"),
        ],
        notes=["round trip = member sends !ping until the reply is in their client (decrypted)"],
        extra_checks=[("every encrypted reply decrypted", decrypted)],
    )  # fmt: skip


def run(rounds: int = ROUNDS) -> Outcome:
    failed = Outcome(NAME, METRIC, None, TARGET)
    return run_benchmark(measure, rounds, prefix="bench-e2ee-", timeout=600, failed=failed)


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, argv, rounds=ROUNDS)


if __name__ == "__main__":
    sys.exit(main())
