"""Another member's `!ping` while one member sends pathological messages, against the same figure in
quiet, measured in one run. Member A pings the bot in their DM, one `!ping` after another; in the
hostile blocks member B meanwhile floods a group room and their own DM with messages near
Synapse's 64 KiB limit, cycling through the classes of tests/integration/test_hostile_members.py.
Quiet and hostile blocks alternate. Target: p95(hostile) / p95(quiet) <= 1.5, and B is still
answered afterwards.

B's messages are sent by a separate process (this module run with --worker), so that building and
sending them costs the bot's event loop nothing: the bot, member A and the model stub share this
process's loop, as in the other benchmarks. A bare client answering `!ping` in another DM with A
gives the floor: how much the homeserver and the machine alone slow a round trip under the flood."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO_ROOT,
    CpuMeter,
    Outcome,
    counted,
    finish,
    link_members,
    median,
    options,
    percentile,
    round_trip,
    run_benchmark,
    running_synapse,
    seconds,
    stub_gpt,
)

if TYPE_CHECKING:
    from tests.harness.loop_lag import LoopLag
    from tests.harness.matrix_user import TestUser

NAME = "hostile load"
METRIC = "p95 hostile / p95 quiet"
TARGET = 1.5
BLOCKS = 4  # quiet and hostile blocks each, alternating
PINGS = 15  # of member A per block
PING_TIMEOUT_S = 15.0  # a ping unanswered this long counts as missed (and as this long)
SETTLE_TIMEOUT_S = 60.0  # for the bot to answer B's `!ping` after a hostile block
RATE = 0.0  # B's messages per second, both rooms together; 0: as fast as Synapse stores them
API_KEY = "sk-bench"
THIS_FILE = Path(__file__).resolve()


# -- the hostile member, in its own process -------------------------------------------------------


async def _worker(spec: dict[str, Any]) -> None:
    """Reads commands on stdin: `go` (flood every target until `halt`), `halt` (stop, then `!ping`
    in every target and wait for the bot's pong; prints one JSON line of results), `quit`."""
    import httpx

    # Seconds between two messages in one target (0: each as soon as the last was stored).
    interval = len(spec["targets"]) / spec["rate"] if spec["rate"] > 0 else 0.0
    bot_id: str = spec["bot_id"]
    txn = itertools.count()
    run_id = f"{os.getpid()}-{time.monotonic_ns()}"
    async with httpx.AsyncClient(
        base_url=spec["homeserver"],
        headers={"Authorization": f"Bearer {spec['token']}"},
        timeout=60,
    ) as http:

        async def send(room: str, content: dict[str, Any]) -> httpx.Response:
            body = json.dumps(content, ensure_ascii=False).encode()
            return await http.put(
                f"/_matrix/client/v3/rooms/{room}/send/m.room.message/h{run_id}-{next(txn)}",
                content=body,
                headers={"Content-Type": "application/json"},
            )

        sent: collections.Counter[str] = collections.Counter()
        refused: collections.Counter[str] = collections.Counter()
        started_flood = asyncio.Event()

        # Each room's cycle carries on from block to block, so every class is sent alike.
        cycles = {t["room"]: itertools.cycle(t["payloads"]) for t in spec["targets"]}

        async def flood(room: str, stop: asyncio.Event) -> None:
            due = time.monotonic()
            while not stop.is_set():
                what, content = next(cycles[room])
                response = await send(room, content)
                if response.status_code == 200:
                    sent[what] += 1
                    started_flood.set()
                elif response.status_code == 429:
                    wait_ms = response.json().get("retry_after_ms", 100)
                    refused[f"{what}: 429"] += 1
                    await asyncio.sleep(wait_ms / 1000)
                else:
                    errcode = response.json().get("errcode", "?") if response.content else "?"
                    refused[f"{what}: {response.status_code} {errcode}"] += 1
                if interval:
                    due += interval
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))

        async def settle(room: str) -> float | None:
            """Seconds until the bot answers a `!ping` here (None: not within the timeout)."""
            started = time.monotonic()
            response = await send(room, {"msgtype": "m.text", "body": "!ping"})
            response.raise_for_status()
            ping_id = response.json()["event_id"]
            only_bot = json.dumps({"senders": [bot_id], "types": ["m.room.message"]})
            while time.monotonic() - started < SETTLE_TIMEOUT_S:
                page = await http.get(
                    f"/_matrix/client/v3/rooms/{room}/messages",
                    params={"dir": "b", "limit": 20, "filter": only_bot},
                )
                for event in page.json().get("chunk", []):
                    content = event.get("content", {})
                    reply_to = (content.get("m.relates_to") or {}).get("m.in_reply_to") or {}
                    if reply_to.get("event_id") == ping_id:
                        pong = str(content.get("body", "")).startswith("Pong!")
                        return time.monotonic() - started if pong else None
                await asyncio.sleep(0.05)
            return None

        stop = asyncio.Event()
        floods: list[asyncio.Task[None]] = []
        print("ready", flush=True)
        while True:
            command = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if command == "go":
                sent.clear()
                refused.clear()
                started_flood.clear()
                stop = asyncio.Event()
                floods = [asyncio.create_task(flood(t["room"], stop)) for t in spec["targets"]]
                await started_flood.wait()
                print("going", flush=True)
            elif command == "halt":
                stop.set()
                await asyncio.gather(*floods)
                settled = {t["where"]: await settle(t["room"]) for t in spec["targets"]}
                print(
                    json.dumps({"sent": dict(sent), "refused": dict(refused), "settle": settled}),
                    flush=True,
                )
            else:  # "quit", or our parent went away
                return


class HostileMember:
    """The parent's handle on the worker process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, spec_path: Path) -> HostileMember:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(THIS_FILE), "--worker", str(spec_path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT,
        )  # fmt: skip
        member = cls(process)
        await member._expect("ready", 60)
        return member

    async def _line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the hostile member's process ended ({self.process.returncode})")
        return line.decode().strip()

    async def _expect(self, word: str, timeout: float) -> None:
        line = await self._line(timeout)
        if line != word:
            raise RuntimeError(f"the hostile member said {line!r}, expected {word!r}")

    async def _say(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\n".encode())
        await self.process.stdin.drain()

    async def go(self) -> None:
        await self._say("go")
        await self._expect("going", 30)

    async def halt(self) -> dict[str, Any]:
        await self._say("halt")
        return json.loads(await self._line(2 * SETTLE_TIMEOUT_S + 60))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._say("quit")
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


# -- member A's pings ------------------------------------------------------------------------------


@dataclass
class Ping:
    total: float  # seconds from sending until the pong is in A's client
    to_server: float | None  # sending -> the homeserver created the ping (origin_server_ts)
    bot: float | None  # ping created -> pong created (the bot's sync, handling and send)
    back: float | None  # pong created -> in A's client
    answered: bool


async def _ping(user: TestUser, room: str, bot_id: str) -> Ping:
    try:
        trip = await round_trip(user, room, bot_id, timeout=PING_TIMEOUT_S)
    except TimeoutError:
        return Ping(PING_TIMEOUT_S, None, None, None, answered=False)
    return Ping(trip.total, trip.to_server, trip.handling, trip.back,
                answered=trip.body.startswith("Pong!"))  # fmt: skip


@dataclass
class Phase:
    pings: list[Ping] = field(default_factory=list)  # to the bot
    echo_pings: list[Ping] = field(default_factory=list)  # to the echo client (the floor)
    wall: float = 0.0
    synapse_cpu: float = 0.0
    own_cpu: float = 0.0
    worker_cpu: float = 0.0
    worst_lag: float = 0.0
    late: int = 0  # loop wake-ups more than 50 ms late
    stalls: list[str] = field(default_factory=list)  # where the loop was, in stalls over 80 ms

    @property
    def times(self) -> list[float]:
        return [p.total for p in self.pings]

    @property
    def echo_times(self) -> list[float]:
        return [p.total for p in self.echo_pings]


@dataclass
class Measurement:
    quiet: Phase
    hostile: Phase
    sent: collections.Counter[str]
    refused: collections.Counter[str]
    settle: list[dict[str, float | None]]
    final_pongs: dict[str, bool]
    answers: dict[str, str]  # per room: how much of B's recent history the bot's replies are
    quarantined: int
    warnings: collections.Counter[str]
    setup_s: float


async def _echo(user: TestUser, room: str, member: str) -> None:
    """The floor: a minimal client answering `!ping` with a reply, no bot logic at all."""
    last: str | None = None
    while True:
        ping = await user.wait_for_event(
            room,
            lambda e: e["sender"] == member and e["content"].get("body") == "!ping",
            timeout=3600,
            after_event_id=last,
        )
        last = ping["event_id"]
        await user.send_text(room, "Pong!", msgtype="m.notice", extra_content={
            "m.relates_to": {"m.in_reply_to": {"event_id": last}},
        })  # fmt: skip


async def _recent_messages(homeserver: str, token: str, room: str) -> list[dict[str, Any]]:
    """The room's last 100 `m.room.message` events, newest first."""
    import httpx

    async with httpx.AsyncClient(base_url=homeserver, timeout=60) as http:
        page = await http.get(
            f"/_matrix/client/v3/rooms/{room}/messages",
            params={"dir": "b", "limit": 100},
            headers={"Authorization": f"Bearer {token}"},
        )
        page.raise_for_status()
    return [e for e in page.json()["chunk"] if e.get("type") == "m.room.message"]


# -- the run ---------------------------------------------------------------------------------------


def _count_warnings(counter: collections.Counter[str]) -> None:
    """Count the bot's warnings and errors by event name; show only the errors (a flood can
    make thousands of identical warnings)."""
    import structlog

    def counting(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
        level = event.get("level") or name
        counter[f"{level} {event.get('event')}"] += 1
        if level == "warning":
            raise structlog.DropEvent
        return event

    config = structlog.get_config()
    processors = list(config["processors"])
    processors.insert(len(processors) - 1, counting)  # after add_log_level, before rendering
    structlog.configure(processors=processors)


@dataclass
class Stage:
    """What one block needs: member A, their DMs with the bot and with the echo client."""

    a: TestUser
    bot_id: str
    bot_dm: str
    echo_id: str
    echo_dm: str
    synapse_pid: int
    worker_pid: int


async def _block(stage: Stage, phase: Phase, pings: int, lag: LoopLag) -> None:
    """A's pings, the bot's and (every other round) the echo client's, one after another."""
    cpu = CpuMeter({"synapse": stage.synapse_pid, "own": time.process_time,
                    "worker": stage.worker_pid})  # fmt: skip
    late, stacks = len(lag.late), len(lag.stacks)
    started = time.monotonic()
    lag.take()
    for i in range(pings):
        phase.pings.append(await _ping(stage.a, stage.bot_dm, stage.bot_id))
        if i % 2 == 0:
            phase.echo_pings.append(await _ping(stage.a, stage.echo_dm, stage.echo_id))
    phase.wall += time.monotonic() - started
    phase.worst_lag = max(phase.worst_lag, lag.take())
    phase.late += len(lag.late) - late
    phase.stalls += [_innermost(st) for st in lag.stacks[stacks:]]
    used = cpu.used()
    phase.synapse_cpu += used["synapse"]
    phase.own_cpu += used["own"]
    phase.worker_cpu += used["worker"]


async def measure(workdir: Path, blocks: int, pings: int, rate: float) -> Measurement:
    warnings: collections.Counter[str] = collections.Counter()
    _count_warnings(warnings)
    setup_started = time.monotonic()
    async with running_synapse(workdir) as synapse:
        return await _measure_on(synapse, workdir, blocks, pings, rate, warnings, setup_started)


async def _measure_on(
    synapse: Any, workdir: Path, blocks: int, pings: int, rate: float,
    warnings: collections.Counter[str], setup_started: float,
) -> Measurement:  # fmt: skip
    from nio import RoomPreset

    from tests.harness.bot import RunningBot, bot_config, write_config
    from tests.harness.llm_stub import LlmStub
    from tests.harness.loop_lag import LoopLag
    from tests.harness.matrix_user import TestUser, default_client_config
    from tests.integration.test_hostile_members import payloads

    # Plain rooms, no encryption in the members' clients (B logs in twice with one device).
    plain = default_client_config(encryption_enabled=False)
    assert synapse.process is not None
    # A short constant answer: what is measured is the bot's handling, not the stub echoing 56 KB.
    stub = LlmStub(api_key=API_KEY, reply="Noted.", chunk_delay=0)
    await stub.start()
    hostile: HostileMember | None = None
    bot: RunningBot | None = None
    echo_task: asyncio.Task[None] | None = None
    try:
        bot_account, a_account, b_account, echo_account = await asyncio.to_thread(
            lambda: [synapse.fresh_account(p) for p in ("bot", "alice", "mallory", "echo")]
        )
        config = bot_config(
            synapse, bot_account, workdir / "data",
            extra={"gpt": stub_gpt(stub, API_KEY), "logging": {"level": "warning"}},
        )  # fmt: skip
        bot = RunningBot(write_config(workdir / "config.toml", config), bot_account)
        # Both linked to an SSO identity, as in the hostile-members test: B's messages reach the
        # chat relay and its quota, not only the "please log in" answer.
        await link_members(bot.config.database.url, (a_account.user_id, b_account.user_id))
        await bot.start(ready_timeout=60)
        bot_id = bot.user_id

        async with (
            await TestUser.login(synapse.base_url, echo_account, client_config=plain) as echo,
            await TestUser.login(synapse.base_url, a_account, client_config=plain) as a,
        ):
            async with await TestUser.login(synapse.base_url, b_account, client_config=plain) as b:
                await b.client.set_displayname("M" * 256)  # the longest Synapse allows
                group = await b.create_room(
                    invite=[bot_id, echo.user_id], name="commons", preset=RoomPreset.public_chat
                )
                await echo.join(group)  # the floor reads the group room's flood too
                b_dm = await b.create_room(invite=[bot_id], is_direct=True)
                targets = []
                for where, room in (("room", group), ("DM", b_dm)):
                    await b.wait_for_membership(room, bot_id, "join", timeout=30)
                    own = await b.send_text(room, "hello there")  # edits, threads point at it
                    targets.append({"where": where, "room": room,
                                    "payloads": payloads(bot_id, own)})  # fmt: skip
            spec = workdir / "hostile.json"
            spec.write_text(json.dumps({
                "homeserver": synapse.base_url, "token": b_account.access_token,
                "bot_id": bot_id, "targets": targets, "rate": rate,
            }))  # fmt: skip
            hostile = await HostileMember.start(spec)

            # A is not in the group room: its client would parse every 56 KB message in this loop.
            bot_dm = await a.create_room(invite=[bot_id], is_direct=True)
            echo_dm = await a.create_room(invite=[echo.user_id], is_direct=True)
            await echo.join(echo_dm)
            echo_task = asyncio.create_task(_echo(echo, echo_dm, a.user_id))
            await a.wait_for_membership(bot_dm, bot_id, "join", timeout=30)
            stage = Stage(a, bot_id, bot_dm, echo.user_id, echo_dm,
                          synapse.process.pid, hostile.process.pid)  # fmt: skip
            for _ in range(5):  # warm-up: connections, caches
                await _ping(a, bot_dm, bot_id)
                await _ping(a, echo_dm, echo.user_id)
            setup_s = time.monotonic() - setup_started

            quiet, loud = Phase(), Phase()
            sent: collections.Counter[str] = collections.Counter()
            refused: collections.Counter[str] = collections.Counter()
            settle: list[dict[str, float | None]] = []
            async with LoopLag() as lag:
                for _ in range(blocks):
                    await asyncio.sleep(0.3)  # chat turns of the last hostile block finish
                    await _block(stage, quiet, pings, lag)
                    await hostile.go()
                    await _block(stage, loud, pings, lag)
                    result = await hostile.halt()  # and B's `!ping` answered in both rooms
                    sent.update(result["sent"])
                    refused.update(result["refused"])
                    settle.append(result["settle"])
            await hostile.close()
            hostile = None

        # Afterwards, B is answered; and how much of the rooms' recent history is the bot's.
        final_pongs: dict[str, bool] = {}
        answers = {}
        async with await TestUser.login(
            synapse.base_url, b_account, first_sync_timeout=60, client_config=plain
        ) as b:
            for where, room in (("DM", b_dm), ("room", group)):
                recent = await _recent_messages(synapse.base_url, b_account.access_token, room)
                replies = [e for e in recent if e["sender"] == bot_id]
                longest = max((len(json.dumps(e["content"])) for e in replies), default=0)
                answers[where] = (
                    f"{len(replies)} of the last {len(recent)} messages, largest {longest} B"
                )
                try:
                    pong = await b.ask(room, "!ping", sender=bot_id, timeout=30)
                    final_pongs[where] = pong["content"]["body"].startswith("Pong!")
                except TimeoutError:
                    final_pongs[where] = False
        assert bot.app is not None
        quarantined = len(await bot.app.ledger.quarantined())
        return Measurement(quiet, loud, sent, refused, settle, final_pongs, answers, quarantined,
                           warnings, setup_s)  # fmt: skip
    finally:
        if echo_task is not None:
            echo_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await echo_task
        if hostile is not None:
            await hostile.close()
        if bot is not None:
            await bot.stop()
        await stub.stop()


def _innermost(stack: str, frames: int = 3) -> str:
    """`file:line function` of the innermost frames of a formatted stack, innermost last."""
    found = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', stack)
    root = str(REPO_ROOT) + os.sep
    return " > ".join(
        f"{path.removeprefix(root)}:{line} {function}" for path, line, function in found[-frames:]
    )


def _ms(values: list[float | None], pct: float) -> str:
    present = [v for v in values if v is not None]
    return f"{percentile(present, pct) * 1000:.0f} ms" if present else "-"


def _pair(values: list[float]) -> str:
    return f"{median(values) * 1000:.0f} / {percentile(values, 95) * 1000:.0f} ms"


def outcome(m: Measurement, blocks: int, pings: int, rate: float) -> Outcome:
    quiet, loud = m.quiet.times, m.hostile.times
    ratio = percentile(loud, 95) / percentile(quiet, 95)
    floor = percentile(m.hostile.echo_times, 95) / percentile(m.quiet.echo_times, 95)
    total_sent = sum(m.sent.values())
    details = [
        ("blocks", f"{blocks} quiet + {blocks} hostile, alternating, {pings} bot pings each"),
        ("setup", seconds(m.setup_s)),
        ("quiet p50", seconds(median(quiet))),
        ("quiet p95", seconds(percentile(quiet, 95))),
        ("hostile p50", seconds(median(loud))),
        ("hostile p95", seconds(percentile(loud, 95))),
        ("hostile max", seconds(max(loud))),
        ("ratio p50 hostile / quiet", f"{median(loud) / median(quiet):.3f}"),
        ("floor: echo client p50/p95", f"quiet {_pair(m.quiet.echo_times)}, "
                                       f"hostile {_pair(m.hostile.echo_times)}"),
        ("floor ratio p95 hostile / quiet", f"{floor:.3f}"),
    ]  # fmt: skip
    for label, phase in (("quiet", m.quiet), ("hostile", m.hostile)):
        p = phase.pings
        details.append((
            f"{label} bot round trip split p50/p95",
            f"to homeserver {_ms([x.to_server for x in p], 50)}/{_ms([x.to_server for x in p], 95)}, "
            f"bot {_ms([x.bot for x in p], 50)}/{_ms([x.bot for x in p], 95)}, "
            f"back {_ms([x.back for x in p], 50)}/{_ms([x.back for x in p], 95)}",
        ))  # fmt: skip
    for label, phase in (("quiet", m.quiet), ("hostile", m.hostile)):
        wall = phase.wall or 1.0
        details.append((
            f"{label} CPU (cores) / loop lag",
            f"Synapse {phase.synapse_cpu / wall:.2f}, this process {phase.own_cpu / wall:.2f}, "
            f"B's sender {phase.worker_cpu / wall:.2f}; worst lag {phase.worst_lag * 1000:.0f} ms, "
            f"{phase.late} over 50 ms",
        ))  # fmt: skip
    details += [
        ("hostile messages sent", f"{total_sent} ({total_sent / (m.hostile.wall or 1):.1f}/s), "
                                  f"{len(m.sent)} classes, {sum(m.refused.values())} refused"),
        ("B's !ping after each block", ", ".join(
            "/".join("none" if s is None else f"{s:.2f}" for s in block.values())
            for block in m.settle
        ) + " s (room/DM)"),
        ("B answered afterwards", ", ".join(f"{w} {'yes' if ok else 'NO'}"
                                            for w, ok in m.final_pongs.items())),
        *((f"bot's replies in B's {w}", text) for w, text in m.answers.items()),
        ("events quarantined by the bot", str(m.quarantined)),
    ]  # fmt: skip
    missed = sum(not p.answered for p in m.quiet.pings + m.hostile.pings)
    notes = [
        "round trip = A sends !ping in their DM until the bot's pong is in A's client",
        "floor = the same, to a bare client answering !ping in another DM with A (a member of the "
        "group room too, not of B's DM); when its own ratio is over the target, the homeserver "
        "and machine alone miss it",
        "split from the homeserver's origin_server_ts: to homeserver = ping created, "
        "bot = ping created -> pong created, back = pong created -> seen by A",
        "B floods a group room and their DM at once (one message in flight in each, "
        + (f"{rate:g} messages/s in all" if rate > 0 else "each sent once the last was stored")
        + "), from a separate process; A is not in the group room",
        "sent by class: " + ", ".join(f"{w} {n}" for w, n in sorted(m.sent.items())),
    ]
    if m.refused:
        notes.append("refused: " + ", ".join(f"{w} x{n}" for w, n in m.refused.items()))
    for label, phase in (("quiet", m.quiet), ("hostile", m.hostile)):
        for where, n in collections.Counter(phase.stalls).most_common(3):
            if where.endswith(" select"):
                where = "waiting in select (the process was not scheduled, or another thread held the GIL)"
            notes.append(f"{label} loop stall over 80 ms ({n}x): {where}")
    if m.warnings:
        notes.append("bot log lines at warning and above: " + counted(m.warnings.most_common(8)))
    return Outcome(
        NAME, METRIC, ratio, TARGET, details=details, notes=notes,
        extra_checks=[
            ("every ping of A answered", missed == 0),
            ("B answered afterwards", bool(m.final_pongs) and all(m.final_pongs.values())),
            ("hostile messages sent", total_sent > 0),
        ],
    )  # fmt: skip


async def _evaluated(workdir: Path, blocks: int, pings: int, rate: float) -> Outcome:
    return outcome(await measure(workdir, blocks, pings, rate), blocks, pings, rate)


def run(blocks: int = BLOCKS, pings: int = PINGS, rate: float = RATE) -> Outcome:
    failed = Outcome(NAME, METRIC, None, TARGET)
    return run_benchmark(
        _evaluated, blocks, pings, rate, prefix="bench-hostile-", timeout=600, failed=failed
    )


def main(argv: list[str] | None = None) -> int:
    parser = options(__doc__, blocks=BLOCKS)
    parser.add_argument("--pings", type=int, default=PINGS, help="of member A per block")
    parser.add_argument(
        "--rate", type=float, default=RATE,
        help="B's messages per second, both rooms together (default 0: as fast as stored)",
    )  # fmt: skip
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        asyncio.run(_worker(json.loads(Path(args.worker).read_text())))
        return 0
    return finish(run(args.blocks, args.pings, args.rate))


if __name__ == "__main__":
    sys.exit(main())
