"""Benchmark: members asking the assistant at the same time do not wait for each other, measured
against a minimal relay in the same run.

Target (issue #10): "20 members asking the assistant at once, model latency 1 s: (wall time to the
last complete answer / one lone ask) divided by the same ratio for a minimal relay that posts one
message per answer, same run": at most 1.25.

The whole stack on loopback: a real Synapse (relaxed rate limits, data in a temporary directory;
its database SQLite by default, or a throwaway PostgreSQL server with ``--synapse-db postgres``),
the project's OpenAI-compatible stub answering after 1 s and streaming word by word (0.01 s apart)
when asked to stream, and two assistants on it:

* the real bot, `community-bot run` in a process of its own (as in production: encryption on,
  SQLite store), ``[gpt]`` pointing at the stub (streaming on, as by default);
* the minimal relay, bench/echo_bot.py in ``relay`` mode in a process of its own (encryption on
  too): for each message, one request to the stub (not streamed), then one message with the
  answer. No typing notice, placeholder, edits, history, quota or database.

20 fresh members (plain matrix-nio clients in this process), each linked to an SSO identity (the
bot's relay requires it) and each with a DM with the bot and one with the relay. A question is
answered when the member's client sees the final text, "Echo: <question>" (from the bot: its
placeholder edited into it, or a message carrying it; from the relay: its message).

* single: one member asks alone, from sending until the final answer is seen; three times each,
  bot and relay in turn (after one unmeasured warm-up question each); the median is the baseline;
* all-20: every member sends a question at once (asyncio.gather); from the start until the last
  member sees their final answer; three bursts each, alternating (bot first, then relay first,
  ...), the median is used.

Ratio = (all-20 / single of the bot) / (all-20 / single of the relay); target <= 1.25. Beside it:
the stub's peak of requests in flight per burst (20 means no request waited for another before
reaching the model), each answer's latency spread, where the time of an answer goes (from the
server timestamps and the stub's clock), and the CPU that Synapse, its database, the bot, the relay
and this process (20 clients + stub) used per burst.

Run alone: ``.venv/bin/python bench/chat_concurrency.py [--users N] [--synapse-db sqlite|postgres]``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from bench.common import (
    BotProcess,
    CpuMeter,
    EchoBot,
    Outcome,
    bot_process,
    close_all,
    counted,
    cpu_medians,
    cpu_seconds,
    echo_process,
    finish,
    link_members,
    log_in,
    open_dm,
    options,
    percentile,
    register,
    run_benchmark,
    running_synapse,
    seconds,
    stub_gpt,
)
from bot.config import load_config
from tests.harness.llm_stub import LlmStub, message_text
from tests.harness.matrix_user import TestUser
from tests.harness.postgres import PostgresServer

NAME = "chat_concurrency"
USERS = 20
LATENCY_S = 1.0
CHUNK_DELAY_S = 0.01
SINGLE_RUNS = 3
BURSTS = 3
TARGET = 1.25
API_KEY = "sk-bench"
ANSWER_TIMEOUT_S = 60.0
OVERALL_TIMEOUT_S = 900.0
QUESTION = "how do rooms spaces and threads fit together on Matrix"
SYNAPSE_DBS = ("postgres", "sqlite")
SYNAPSE_DB = "sqlite"  # measured: PostgreSQL-backed Synapse is slower here (bench/README.md)
SYNAPSE_DB_NAME = "synapse"
WHO = ("bot", "relay")


def metric(users: int) -> str:
    return f"(all-{users} / single) bot / relay"


class TimedStub(LlmStub):
    """The stub, also noting when each chat request arrived and when its answer was fully sent
    (wall clock, to line up with the homeserver's origin_server_ts), by the question asked."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.timings: dict[str, tuple[float, float]] = {}

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        response = await super()._chat_completions(request)
        finished = time.time()
        try:
            body = await request.json()  # aiohttp keeps the body: this reads it again
            user = [m for m in body.get("messages") or [] if m.get("role") == "user"]
            self.timings[message_text(user[-1].get("content"))] = (arrived, finished)
        except Exception:  # noqa: S110 - a request without a question is not ours to time
            pass
        return response


@dataclass
class Answer:
    question: str
    sent: float  # monotonic, just before sending
    seen: float  # monotonic, when the final answer reached the member's client
    sent_wall: float
    seen_wall: float
    question_ts: float  # homeserver timestamps (s)
    first_ts: float  # the answerer's first message (the bot's placeholder; the relay's answer)
    final_ts: float
    events: int  # the answerer's messages and edits for this answer

    @property
    def latency(self) -> float:
        return self.seen - self.sent


async def ask(user: TestUser, room: str, answerer: str, question: str) -> Answer:
    """Send a question; return once the member sees the final answer: an edit (m.replace) or a
    message whose text is "Echo: <question>"."""
    expected = f"Echo: {question}"

    def final_or_failure(event: dict[str, Any]) -> bool:
        if event.get("type") != "m.room.message" or event.get("sender") != answerer:
            return False
        content = event["content"]
        if content.get("m.relates_to", {}).get("rel_type") == "m.replace":
            body = str((content.get("m.new_content") or {}).get("body", ""))
        else:
            body = str(content.get("body", ""))
        return body == expected or body.startswith("⚠️")

    sent, sent_wall = time.monotonic(), time.time()
    question_id = await user.send_text(room, question)
    event = await user.wait_for_event(
        room, final_or_failure, timeout=ANSWER_TIMEOUT_S, after_event_id=question_id
    )
    seen, seen_wall = time.monotonic(), time.time()
    content = event["content"]
    body = (content.get("m.new_content") or content).get("body")
    if body != expected:
        raise RuntimeError(f"{user.user_id} got {body!r} instead of the answer")
    events = user.events(room)
    ids = [e.get("event_id") for e in events]
    between = events[ids.index(question_id) + 1 : ids.index(event["event_id"]) + 1]
    theirs = [
        e for e in between if e.get("sender") == answerer and e.get("type") == "m.room.message"
    ]
    by_id = {e.get("event_id"): e for e in events}
    return Answer(
        question=question, sent=sent, seen=seen, sent_wall=sent_wall, seen_wall=seen_wall,
        question_ts=by_id[question_id]["origin_server_ts"] / 1000,
        first_ts=theirs[0]["origin_server_ts"] / 1000,
        final_ts=event["origin_server_ts"] / 1000, events=len(theirs),
    )  # fmt: skip


def _create_synapse_database(postgres: PostgresServer) -> None:
    """The database as Synapse requires it (PostgresServer.create_database uses the server's
    default locale, which Synapse refuses): UTF8 with the C collation, from template0."""
    assert postgres.bin_dir is not None
    sql = (
        f"CREATE DATABASE {SYNAPSE_DB_NAME} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0"
    )
    command = [str(postgres.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    command += ["-h", postgres.host, "-p", str(postgres.port), "-U", "postgres", "-d", "postgres"]
    result = subprocess.run(
        [*command, "-c", sql], capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{sql} failed: {result.stderr.strip()}")


def _synapse_database_config(postgres: PostgresServer) -> dict[str, Any]:
    return {
        "name": "psycopg2",
        "args": {
            "user": "postgres",
            "host": postgres.host,
            "port": postgres.port,
            "database": SYNAPSE_DB_NAME,
            "cp_min": 5,
            "cp_max": 10,
        },
    }


def _db_label(postgres: PostgresServer | None) -> str:
    if postgres is None:
        return "SQLite (Synapse's default file database)"
    version = postgres.bin_dir.parent.name if postgres.bin_dir is not None else "?"
    return f"PostgreSQL {version} (psycopg2, pool 5-10; test server: fsync off)"


class DatabaseCpu:
    """CPU time of a PostgreSQL server: the postmaster, its live backends and the ones that ended
    (the postmaster's children's time, counted once reaped). Zero for SQLite (inside Synapse)."""

    def __init__(self, postgres: PostgresServer | None) -> None:
        self.pid: int | None = None
        if postgres is not None:
            self.pid = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])

    def seconds(self) -> float:
        if self.pid is None:
            return 0.0
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # ended meanwhile
            if stat.parent.name == str(self.pid):
                ticks += sum(int(f) for f in fields[11:15])  # own + reaped children
            elif fields[1] == str(self.pid):
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Setup:
    register_s: float
    link_s: float
    start_s: float  # the bot and the relay, side by side
    login_s: float
    dm_s: float

    @property
    def total_s(self) -> float:
        return self.register_s + self.link_s + self.start_s + self.login_s + self.dm_s


@dataclass
class Burst:
    wall: float
    answers: list[Answer]
    peak_inflight: int
    cpu: dict[str, float]  # seconds used during the burst, by process


@dataclass
class Side:
    """What one answerer (the bot or the relay) did."""

    warmup: float = 0.0
    singles: list[Answer] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)

    @property
    def single(self) -> float:
        return statistics.median(a.latency for a in self.singles)

    @property
    def burst(self) -> float:
        return statistics.median(b.wall for b in self.bursts)

    @property
    def ratio(self) -> float:
        return self.burst / self.single


@dataclass
class Measurement:
    users: int
    synapse_db: str  # "postgres" or "sqlite"
    db_label: str
    setup: Setup
    sides: dict[str, Side]
    stub_timings: dict[str, tuple[float, float]]
    synapse_idle_cpu: float  # CPU seconds per second while the clients wait, nothing happening
    bot_rate_limited: int
    bot_problems: dict[str, int]


async def _burst(
    who: str, members: list[TestUser], rooms: list[str], answerer: str, label: str,
    stub: TimedStub, cpu_of: dict[str, Callable[[], float]],
) -> Burst:  # fmt: skip
    stub.clear()
    cpu = CpuMeter(cpu_of)
    started = time.monotonic()
    answers = await asyncio.gather(*(
        ask(m, r, answerer, f"{who} {label} member {i + 1}: {QUESTION}")
        for i, (m, r) in enumerate(zip(members, rooms, strict=True))
    ))  # fmt: skip
    wall = max(a.seen for a in answers) - started
    return Burst(wall, list(answers), stub.peak_inflight, cpu.used())


async def measure(workdir: Path, users: int = USERS, synapse_db: str = SYNAPSE_DB) -> Measurement:
    if synapse_db not in SYNAPSE_DBS:
        raise ValueError(f"synapse_db must be one of {SYNAPSE_DBS}: {synapse_db!r}")
    postgres = PostgresServer(workdir / "postgres") if synapse_db == "postgres" else None
    try:
        database = None
        if postgres is not None:
            await asyncio.to_thread(postgres.start)
            await asyncio.to_thread(_create_synapse_database, postgres)
            database = _synapse_database_config(postgres)
        db_cpu = DatabaseCpu(postgres)
        async with running_synapse(workdir, database=database) as synapse:
            return await _measure_on(workdir, synapse, users, synapse_db, postgres, db_cpu)
    finally:
        if postgres is not None:
            await asyncio.to_thread(postgres.stop)


async def _measure_on(
    workdir: Path, synapse: Any, users: int, synapse_db: str, postgres: PostgresServer | None,
    db_cpu: DatabaseCpu,
) -> Measurement:  # fmt: skip
    stub = TimedStub(api_key=API_KEY, latency=LATENCY_S, chunk_delay=CHUNK_DELAY_S)
    bot: BotProcess | None = None
    relay: EchoBot | None = None
    clients: list[TestUser] = []
    try:
        assert synapse.process is not None
        synapse_pid = synapse.process.pid
        await stub.start()

        # Setup, timed by phase: accounts, SSO links, the bot and the relay, clients, DMs.
        t = time.monotonic()
        bot_account, relay_account, *accounts = await register(synapse, "c", 2 + users)
        register_s = time.monotonic() - t

        bot = bot_process(synapse, bot_account, workdir, data_dir=workdir / "bot-data",
                          extra={"gpt": stub_gpt(stub, API_KEY)})  # fmt: skip
        # Linked before the bot starts, so no "you are linked" notice can race the setup.
        t = time.monotonic()
        await link_members(load_config(bot.config_path).database.url,
                           [a.user_id for a in accounts])  # fmt: skip
        link_s = time.monotonic() - t

        t = time.monotonic()
        relay = echo_process(synapse, relay_account, workdir, name="relay", mode="relay",
                             stub_url=stub.base_url, api_key=API_KEY)  # fmt: skip
        await asyncio.gather(bot.start(), relay.start())
        start_s = time.monotonic() - t

        t = time.monotonic()
        clients.extend(await log_in(synapse, accounts))
        login_s = time.monotonic() - t

        t = time.monotonic()
        answerers = {"bot": bot.user_id, "relay": relay.user_id}
        rooms = {
            who: list(await asyncio.gather(*(open_dm(u, answerer) for u in clients)))
            for who, answerer in answerers.items()
        }
        dm_s = time.monotonic() - t
        setup = Setup(register_s, link_s, start_s, login_s, dm_s)

        # Baseline: one member at a time (a warm-up first: connection pools, first requests).
        sides = {who: Side() for who in WHO}
        for who in WHO:
            warm = await ask(
                clients[0], rooms[who][0], answerers[who], f"{who} warm-up: {QUESTION}"
            )
            sides[who].warmup = warm.latency
        for i in range(SINGLE_RUNS):
            k = (i + 1) % len(clients)
            for who in WHO:
                await asyncio.sleep(0.5)  # let the previous turn finish (commit, typing off)
                sides[who].singles.append(await ask(
                    clients[k], rooms[who][k], answerers[who], f"{who} single {i + 1}: {QUESTION}"
                ))  # fmt: skip

        # A quiet moment: the homeserver's idle load with 20 clients waiting.
        await asyncio.sleep(1.0)
        idle_cpu, idle_started = cpu_seconds(synapse_pid), time.monotonic()
        await asyncio.sleep(2.0)
        idle_cpu = (cpu_seconds(synapse_pid) - idle_cpu) / (time.monotonic() - idle_started)

        # Everyone at once, in turn.
        cpu_of = {
            "Synapse": lambda: cpu_seconds(synapse_pid),
            **({"PostgreSQL": db_cpu.seconds} if postgres is not None else {}),
            "bot": lambda: cpu_seconds(bot.pid),
            "relay": lambda: cpu_seconds(relay.pid),
            "this process (clients, stub)": time.process_time,
        }
        for b in range(BURSTS):
            for who in WHO if b % 2 == 0 else WHO[::-1]:
                await asyncio.sleep(1.0)
                sides[who].bursts.append(await _burst(
                    who, clients, rooms[who], answerers[who], f"burst {b + 1}", stub, cpu_of
                ))  # fmt: skip
        rate_limited = sum(1 for line in bot.lines if line.event == "matrix.rate_limited")
        return Measurement(
            users=users, synapse_db=synapse_db, db_label=_db_label(postgres), setup=setup,
            sides=sides, stub_timings=dict(stub.timings), synapse_idle_cpu=idle_cpu,
            bot_rate_limited=rate_limited, bot_problems=dict(bot.problems()),
        )  # fmt: skip
    finally:
        await close_all(clients, bot, relay)
        await stub.stop()


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} / {percentile(values, 90):.3f} / {max(values):.3f} s"


PHASES = (
    "question sent -> created by the homeserver",
    "question created -> first message created",
    "first message created -> request reaches the stub",
    "stub: 1 s latency (+ streaming)",
    "stub done -> final message or edit created",
    "final created -> seen by the member",
)


def _phases(
    answers: list[Answer], stub_timings: dict[str, tuple[float, float]]
) -> dict[str, list[float]]:
    """Where each answer's time went, from the homeserver's timestamps and the stub's clock."""
    phases: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for a in answers:
        arrived, done = stub_timings.get(a.question, (float("nan"), float("nan")))
        values = (
            a.question_ts - a.sent_wall,
            a.first_ts - a.question_ts,
            arrived - a.first_ts,
            done - arrived,
            a.final_ts - done,
            a.seen_wall - a.final_ts,
        )
        for phase, value in zip(phases, values, strict=True):
            phases[phase].append(value)
    return phases


def evaluate(m: Measurement) -> Outcome:
    bot, relay = m.sides["bot"], m.sides["relay"]
    ratio = bot.ratio / relay.ratio
    s = m.setup
    details = [
        ("homeserver database", m.db_label),
        (f"setup total ({m.users} members)", seconds(s.total_s)),
        ("  register accounts", seconds(s.register_s)),
        ("  link SSO identities", seconds(s.link_s)),
        ("  start the bot and the relay", seconds(s.start_s)),
        ("  log in clients (first sync)", seconds(s.login_s)),
        ("  open DMs (bot and relay joined)", seconds(s.dm_s)),
    ]
    for who, side in m.sides.items():
        latencies = [a.latency for b in side.bursts for a in b.answers]
        events = [a.events for b in side.bursts for a in b.answers]
        details += [
            (f"{who}: warm-up question (not counted)", seconds(side.warmup)),
            (f"{who}: single runs", ", ".join(f"{a.latency:.3f}" for a in side.singles) + " s"),
            (f"{who}: all-{m.users} wall times", ", ".join(f"{b.wall:.3f}" for b in side.bursts)
             + " s"),
            (f"{who}: all-{m.users} / single (medians)",
             f"{side.burst:.3f} / {side.single:.3f} = {side.ratio:.3f}"),
            (f"{who}: stub peak requests in flight", ", ".join(
                str(b.peak_inflight) for b in side.bursts) + f" of {m.users}"),
            (f"{who}: per-member latency median / p90 / max", _spread(latencies)),
            (f"{who}: messages + edits per answer", f"{statistics.mean(events):.2f} "
             f"(min {min(events)}, max {max(events)})"),
            (f"{who}: CPU per burst (medians)", cpu_medians([b.cpu for b in side.bursts])),
        ]  # fmt: skip
    details.append((f"phases of an answer: bot | relay, all-{m.users} median / p90 / max", ""))
    bot_phases = _phases([a for b in bot.bursts for a in b.answers], m.stub_timings)
    relay_phases = _phases([a for b in relay.bursts for a in b.answers], m.stub_timings)
    details += [
        (f"  {phase}", f"{_spread(bot_phases[phase])} | {_spread(relay_phases[phase])}")
        for phase in PHASES
    ]
    details += [
        ("homeserver CPU while idle", f"{m.synapse_idle_cpu:.2f} s per s"),
        ("bot rate-limited by homeserver", str(m.bot_rate_limited)),
        ("bot log lines at warning and above", counted(m.bot_problems.items())),
    ]  # fmt: skip
    db = "PostgreSQL" if m.synapse_db == "postgres" else "SQLite"
    return Outcome(
        name=NAME,
        metric=metric(m.users),
        value=ratio,
        limit=TARGET,
        details=details,
        notes=[
            f"stub latency {LATENCY_S:g} s, {CHUNK_DELAY_S:g} s between streamed words (the bot "
            "streams, the relay does not); the bot and the relay are processes of their own, "
            f"the {m.users} members' clients and the stub share this process's event loop, "
            f"Synapse ({db}) runs beside them on {os.cpu_count()} CPU(s)",
            "the relay's ratio is what the homeserver and the machine alone do to a burst of "
            "answers (one message each); the bot's ratio over it is what the bot adds",
            "phases use wall-clock stamps: the homeserver's origin_server_ts (when it created an "
            "event, before storing it), the stub's and this process's clocks; the first message "
            "is the bot's placeholder (or its answer) and the relay's answer; the bot asks the "
            "model while its typing notice and placeholder are still being sent",
        ],
    )


async def _evaluated(workdir: Path, users: int, synapse_db: str) -> Outcome:
    return evaluate(await measure(workdir, users, synapse_db))


def run(users: int = USERS, synapse_db: str = SYNAPSE_DB) -> Outcome:
    failed = Outcome(NAME, metric(users), None, TARGET)
    return run_benchmark(
        _evaluated, users, synapse_db, prefix="bench-chat-", timeout=OVERALL_TIMEOUT_S,
        failed=failed, context=f"Synapse on {synapse_db}",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = options(__doc__, users=USERS)
    parser.add_argument(
        "--synapse-db",
        choices=SYNAPSE_DBS,
        default=SYNAPSE_DB,
        help=f"the homeserver's database (default {SYNAPSE_DB})",
    )
    args = parser.parse_args(argv)
    return finish(run(args.users, args.synapse_db))


if __name__ == "__main__":
    sys.exit(main())
