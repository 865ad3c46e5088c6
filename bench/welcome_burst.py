"""A burst of 200 joins into a welcome room, with Synapse's DEFAULT message rate limit
(rc_message 0.2/s, burst 10: what production bots meet). Joins and invites are not the subject,
so their limits are relaxed. Every newcomer must be greeted, no welcome may fail, and the number
of messages the bot needed is reported (batching is what keeps it small).

Value: newcomers not welcomed / newcomers (target 0). Ratio reported too: messages / joins."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import structlog

from bench.common import Outcome, bench_main, run_benchmark, running_synapse, seconds
from tests.harness.bot import RunningBot, bot_config, write_config
from tests.harness.matrix_user import TestUser

NAME = "welcome burst under default rc_message"
JOINS = 200
DEFAULT_RC_MESSAGE = {"rc_message": {"per_second": 0.2, "burst_count": 10}}
OVERALL_TIMEOUT_S = 600


async def _join_all(base_url: str, room: str, tokens: list[str]) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as http:

        async def join(token: str) -> None:
            response = await http.post(
                f"{base_url}/_matrix/client/v3/join/{room}",
                headers={"Authorization": f"Bearer {token}"},
                json={},
            )
            response.raise_for_status()

        for start in range(0, len(tokens), 25):  # 25 at a time: a burst, not a connection storm
            await asyncio.gather(*(join(t) for t in tokens[start : start + 25]))
    return time.monotonic() - started


async def measure(workdir: Path, joins: int) -> Outcome:
    failures: list[dict] = []

    def catch_failures(logger, name, event):  # type: ignore[no-untyped-def]
        if event.get("event") in ("welcome.failed", "command.failed", "matrix.event_failed"):
            failures.append(dict(event))
        return event

    structlog.configure(processors=[catch_failures, *structlog.get_config()["processors"]])
    async with running_synapse(
        workdir, start_timeout=30, extra_config=DEFAULT_RC_MESSAGE
    ) as synapse:
        owner = synapse.fresh_account("owner")
        bot_account = synapse.fresh_account("bot")
        config = write_config(workdir / "config.toml", bot_config(
            synapse, bot_account, workdir / "data", admins=[owner.user_id],
        ))  # fmt: skip
        bot = RunningBot(config, bot_account)
        await bot.start()
        try:
            async with await TestUser.login(synapse.base_url, owner) as o:
                room = await o.create_room(
                    invite=[bot.user_id], name="Lobby",
                    power_level_override={"users": {bot.user_id: 100}}, preset=_public(),
                )  # fmt: skip
                await o.wait_for_membership(room, bot.user_id, "join", timeout=30)
                await o.ask(room, "!welcome on", sender=bot.user_id, timeout=60)
                setup_started = time.monotonic()
                newcomers = await asyncio.to_thread(
                    lambda: [synapse.fresh_account(f"n{i}") for i in range(joins)]
                )
                registration = time.monotonic() - setup_started
                wanted = {a.user_id for a in newcomers}
                sent_before = bot.app.sender.rate_limited_count
                started = time.monotonic()
                join_time = await _join_all(
                    synapse.base_url, room, [a.access_token for a in newcomers]
                )
                greeted: set[str] = set()
                messages = 0
                deadline = time.monotonic() + OVERALL_TIMEOUT_S
                while greeted != wanted and time.monotonic() < deadline and not failures:
                    await asyncio.sleep(0.5)
                    welcome_events = [
                        e for e in o.events(room)
                        if e["sender"] == bot.user_id and e["content"].get("body", "").startswith("Welcome ")
                    ]  # fmt: skip
                    messages = len(welcome_events)
                    greeted = {
                        m
                        for e in welcome_events
                        for m in e["content"]["m.mentions"].get("user_ids", [])
                    }
                all_greeted_after = time.monotonic() - started
                rate_limited = bot.app.sender.rate_limited_count - sent_before
        finally:
            await bot.stop()
    missing = len(wanted - greeted)
    window = 10.0
    return Outcome(
        NAME,
        "not welcomed / joins",
        missing / joins,
        0.0,
        details=[
            ("joins", str(joins)),
            ("newcomers greeted", str(len(greeted & wanted))),
            ("welcome messages sent", str(messages)),
            ("messages / joins", f"{messages / joins:.3f}"),
            ("rate-limit answers (429) waited out", str(rate_limited)),
            ("joins took", seconds(join_time)),
            ("all greeted after", seconds(all_greeted_after)),
            ("… / batch window (10 s)", f"{all_greeted_after / window:.2f}"),
            ("registering 200 users (setup)", seconds(registration)),
            ("failures logged", str(len(failures))),
        ],
        notes=[
            "rc_message at Synapse's default (0.2/s, burst 10); joins and invites relaxed",
            "no SSO provider configured: the login-link DMs (one message per newcomer) are not "
            "part of this run; at 0.2 messages/s, 200 DMs would take about 17 minutes",
        ],
        extra_checks=[("no welcome failed", not failures)],
    )


def _public():  # type: ignore[no-untyped-def]
    from nio import RoomPreset

    return RoomPreset.public_chat


def run(joins: int = JOINS) -> Outcome:
    failed = Outcome(NAME, "not welcomed / joins", None, 0.0)
    return run_benchmark(
        measure, joins, prefix="bench-welcome-", timeout=OVERALL_TIMEOUT_S + 120, failed=failed
    )


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, argv, joins=JOINS)


if __name__ == "__main__":
    sys.exit(main())
