"""Five members flood a community room with 200 messages while another member pings the bot, on a
Synapse with its DEFAULT message rate limit (rc_message 0.2/s, burst 10) for the bot: what a
production bot meets. The flooders' own limits are lifted through the admin API (a raid from
another server is not limited by ours), so all 200 messages really come, as fast as Synapse
stores them; the pinger's are lifted too (its sends are not the subject). The bot runs with the
defaults of a new install: flood protection on, more than 10 messages in 10 s, warn then mute,
the messages over the limit redacted (paced, `redactions_per_minute` 6).

Figures, one run:
- for every flooder, the time from the message that crossed the threshold (the bot's first
  flood decision for them) until the power-level event muting them reaches a member's client:
  the largest, target <= 10 s;
- `!ping` p95 during the flood / p95 in quiet, same pinger and pace (one `!ping` every
  `interval` seconds: the bot's budget at 0.2 events/s is shared by its replies, the flood's
  warning, mutes, reports and paced redactions), target <= 2.

The flood is sent by a separate process (this module with --worker), so building and sending it
costs the bot's event loop (the bot runs in this process) nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    Figure,
    Outcome,
    bench_main,
    percentile,
    round_trip,
    run_benchmark,
    running_synapse,
)

NAME = "flood containment"
FLOODERS = 5
MESSAGES = 200
PINGS = 20  # per phase
INTERVAL_S = 8.0
MUTE_TARGET_S = 10.0
RATIO_TARGET = 2.0
DEFAULT_RC_MESSAGE = {"rc_message": {"per_second": 0.2, "burst_count": 10}}
OVERALL_TIMEOUT_S = 600
WORKER_SCRIPT = str(Path(__file__).resolve())


async def _worker(spec: dict[str, Any]) -> None:
    """Send `messages` messages spread over the flooders, each flooder as fast as Synapse takes
    them, until it is muted (403)."""
    room, per = spec["room"], spec["messages"] // len(spec["tokens"])
    sent = refused = 0

    async def flood(http: httpx.AsyncClient, token: str, who: int) -> None:
        nonlocal sent, refused
        for i in range(per):
            response = await http.put(
                f"{spec['base_url']}/_matrix/client/v3/rooms/{room}/send/m.room.message/f{who}-{i}",
                headers={"Authorization": f"Bearer {token}"},
                json={"msgtype": "m.text", "body": f"BUY NOW!!! offer {i} from flooder {who}"},
            )
            if response.status_code == 403:
                refused += per - i
                return
            response.raise_for_status()
            sent += 1

    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*(flood(http, t, n) for n, t in enumerate(spec["tokens"])))
    print(json.dumps({"sent": sent, "refused": refused}), flush=True)


async def _lift(base_url: str, admin_token: str, user_id: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{base_url}/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            headers={"Authorization": f"Bearer {admin_token}"},
            json={"messages_per_second": 0, "burst_count": 0},
        )
        response.raise_for_status()


async def _join(base_url: str, room: str, token: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{base_url}/_matrix/client/v3/join/{room}",
            headers={"Authorization": f"Bearer {token}"}, json={},
        )  # fmt: skip
        response.raise_for_status()


async def _pings(
    pinger: Any, room: str, bot_id: str, count: int, interval: float,
    sent_at: list[float] | None = None,
) -> list[float]:  # fmt: skip
    """Round trips of `count` pings, one every `interval` s; when each was sent into `sent_at`."""
    times = []
    for _ in range(count):
        started = time.monotonic()
        if sent_at is not None:
            sent_at.append(started)
        try:
            trip = await round_trip(pinger, room, bot_id, timeout=30)
            times.append(trip.total)
        except TimeoutError:
            times.append(30.0)
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    return times


async def _watch_mutes(owner: Any, room: str, flooders: set[str], seen: dict[str, float]) -> None:
    while set(seen) != flooders:
        levels = [e for e in owner.events(room) if e.get("type") == "m.room.power_levels"]
        if levels:
            users = levels[-1]["content"].get("users", {})
            for who in flooders - set(seen):
                if users.get(who, 0) < 0:
                    seen[who] = time.monotonic()
        await asyncio.sleep(0.05)


async def measure(workdir: Path, flooders: int, messages: int, pings: int,
                  interval: float) -> Outcome:  # fmt: skip
    from nio import RoomPreset

    from tests.harness.bot import RunningBot, bot_config, write_config
    from tests.harness.matrix_user import TestUser

    async with running_synapse(workdir, start_timeout=30, extra_config=DEFAULT_RC_MESSAGE) as hs:
        accounts = await asyncio.to_thread(lambda: {
            "owner": hs.fresh_account("owner"), "bot": hs.fresh_account("bot"),
            "admin": hs.fresh_account("admin", admin=True), "pinger": hs.fresh_account("calm"),
            "flooders": [hs.fresh_account(f"flood{i}") for i in range(flooders)],
        })  # fmt: skip
        owner_a, bot_a, pinger_a = accounts["owner"], accounts["bot"], accounts["pinger"]
        admin_token = accounts["admin"].access_token
        for user in [owner_a, pinger_a, *accounts["flooders"]]:
            await _lift(hs.base_url, admin_token, user.user_id)
        owner = await TestUser.login(hs.base_url, owner_a)
        pinger = await TestUser.login(hs.base_url, pinger_a)
        bot = None
        try:
            admin_room = await owner.create_room(invite=[bot_a.user_id], name="Admins")
            config = write_config(workdir / "config.toml", bot_config(
                hs, bot_a, workdir / "data", admins=[owner_a.user_id],
                extra={"matrix": {"admin_room": admin_room}},
            ))  # fmt: skip
            bot = RunningBot(config, bot_a)
            await bot.start()
            room = await owner.create_room(
                invite=[bot_a.user_id], name="Lobby", preset=RoomPreset.public_chat,
                power_level_override={"users": {bot_a.user_id: 100}},
            )  # fmt: skip
            await owner.wait_for_membership(room, bot_a.user_id, "join", timeout=30)
            for user in [pinger_a, *accounts["flooders"]]:
                await _join(hs.base_url, room, user.access_token)
            await pinger.wait_for_membership(room, pinger_a.user_id, "join", timeout=30)
            await asyncio.sleep(3)  # the bot has seen the joins; its rate budget is full again
            assert bot.app is not None and bot.app.parts is not None
            service = bot.app.parts.protections
            pacer = bot.app.parts.moderation.actions.redactions
            assert service is not None
            quiet = await _pings(pinger, room, bot_a.user_id, pings, interval)

            flooder_ids = {a.user_id for a in accounts["flooders"]}
            muted_seen: dict[str, float] = {}
            watcher = asyncio.create_task(_watch_mutes(owner, room, flooder_ids, muted_seen))
            spec = workdir / "flood.json"
            spec.write_text(json.dumps({
                "base_url": hs.base_url, "room": room, "messages": messages,
                "tokens": [a.access_token for a in accounts["flooders"]],
            }))  # fmt: skip
            rate_limited_before = bot.app.sender.rate_limited_count
            flood_started = time.monotonic()
            worker = await asyncio.create_subprocess_exec(
                sys.executable, WORKER_SCRIPT, "--worker", str(spec),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            flood_sent: list[float] = []
            flooded = await _pings(pinger, room, bot_a.user_id, pings, interval, flood_sent)
            out, _ = await asyncio.wait_for(worker.communicate(), 120)
            with_timeout = asyncio.wait_for(asyncio.shield(watcher), 60)
            try:
                await with_timeout
            except TimeoutError:
                watcher.cancel()
            counts = json.loads(out.decode().strip().splitlines()[-1])
            crossed = {}
            for at, decision in service.acted:
                if decision.protection == "flood" and decision.member not in crossed:
                    crossed[decision.member] = at
            to_mute = {
                who: muted_seen[who] - crossed[who]
                for who in flooder_ids if who in muted_seen and who in crossed
            }  # fmt: skip
            rate_limited = bot.app.sender.rate_limited_count - rate_limited_before
            redactions_done = pacer.done if pacer is not None else 0
            actions = [d.action for _, d in service.acted]
        finally:
            if bot is not None:
                await bot.stop()
            await owner.close()
            await pinger.close()

    worst = max(to_mute.values()) if len(to_mute) == flooders else None
    quiet_p95, flood_p95 = percentile(quiet, 95), percentile(flooded, 95)
    ratio = flood_p95 / quiet_p95
    last_mute = max(muted_seen.values()) if muted_seen else flood_started
    in_burst = [t for t, at in zip(flooded, flood_sent, strict=True) if at <= last_mute]
    return Outcome(
        NAME,
        "crossing -> muted, worst flooder",
        worst,
        MUTE_TARGET_S,
        unit="s",
        fmt=".2f",
        figures=[Figure("!ping p95 flood / quiet", ratio, RATIO_TARGET)],
        details=[
            ("flooders / messages attempted", f"{flooders} / {messages}"),
            ("flood messages sent / refused (muted)", f"{counts['sent']} / {counts['refused']}"),
            ("flooders muted", f"{len(muted_seen)} of {flooders}"),
            (
                "crossing -> muted, each (s)",
                ", ".join(f"{v:.2f}" for v in sorted(to_mute.values())),
            ),
            (
                "flood began -> last mute seen",
                f"{max(muted_seen.values()) - flood_started:.2f} s" if muted_seen else "-",
            ),
            (
                "!ping quiet p50 / p95",
                f"{statistics.median(quiet) * 1000:.0f} / {quiet_p95 * 1000:.0f} ms",
            ),
            (
                "!ping flood p50 / p95",
                f"{statistics.median(flooded) * 1000:.0f} / {flood_p95 * 1000:.0f} ms",
            ),
            ("pings per phase, one every", f"{pings}, {interval:.0f} s"),
            (
                "pings sent before the last mute: count, slowest",
                f"{len(in_burst)}, {max(in_burst) * 1000:.0f} ms" if in_burst else "0",
            ),
            (
                "actions taken",
                ", ".join(f"{a} x{actions.count(a)}" for a in dict.fromkeys(actions)),
            ),
            ("redactions done during the run (paced)", str(redactions_done)),
            ("replies that met a 429 during the flood", str(rate_limited)),
        ],
        notes=[
            "Synapse rc_message at its default (0.2/s, burst 10) for the bot; flooders', the "
            "pinger's and the owner's limits lifted (admin API override_ratelimit)",
            "defaults of a new install: flood on (> 10 messages in 10 s), warn then mute, "
            "redactions paced at 6 per minute behind the bot's replies",
        ],
        extra_checks=[("every flooder muted", len(muted_seen) == flooders)],
    )


def run(flooders: int = FLOODERS, messages: int = MESSAGES, pings: int = PINGS,
        interval: float = INTERVAL_S) -> Outcome:  # fmt: skip
    failed = Outcome(NAME, "crossing -> muted, worst flooder", None, MUTE_TARGET_S, unit="s")
    return run_benchmark(
        measure, flooders, messages, pings, interval, prefix="bench-flood-",
        timeout=OVERALL_TIMEOUT_S, failed=failed,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        parser = argparse.ArgumentParser()
        parser.add_argument("--worker", type=Path)
        spec = json.loads(parser.parse_args(argv).worker.read_text())
        asyncio.run(_worker(spec))
        return 0
    return bench_main(__doc__, run, argv, flooders=FLOODERS, messages=MESSAGES, pings=PINGS,
                      interval=INTERVAL_S)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
