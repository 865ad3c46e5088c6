"""What every benchmark shares: the repository on sys.path, a result type and table printing; the
real bot as a subprocess (`community-bot run`), a raw matrix-nio baseline client (bench/echo_bot.py)
as another, members and their round trips.

Benchmarks report ratios measured in one run (the bot against a baseline taken on the same machine
in the same run), never absolute times, so they hold on a slow laptop as on a fast CI runner. The
few budgets the issue gives in absolute units (start-up seconds, idle MiB) are marked as such."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _number(value: float, fmt: str) -> str:
    return f"{value:{fmt}}"


def _limit_text(limit: float, unit: str = "") -> str:
    """Ratios with two decimals (1.50, 0.95); 0, and whole numbers with a unit (120 MiB, 5 %),
    without."""
    if limit == 0 or (unit and float(limit).is_integer()):
        return f"{limit:.0f}"
    return f"{limit:.2f}"


@dataclass
class Figure:
    """One measured figure against its target: ``value <= limit``, or ``value >= limit`` when
    ``at_least`` (e.g. a throughput ratio). ``unit`` follows value and target ("" for ratios).
    A figure with no limit (``None``) is shown for information: it has no target and no verdict,
    and is never missed."""

    metric: str
    value: float | None
    limit: float | None
    at_least: bool = False
    unit: str = ""
    fmt: str = ".3f"

    @property
    def informative(self) -> bool:
        return self.limit is None

    @property
    def met(self) -> bool:
        if self.limit is None:
            return True
        if self.value is None:
            return False
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    @property
    def target(self) -> str:
        if self.limit is None:
            return "none"
        unit = f" {self.unit}" if self.unit else ""
        return f"{'>=' if self.at_least else '<='} {_limit_text(self.limit, self.unit)}{unit}"

    @property
    def measured(self) -> str:
        if self.value is None:
            return "-"
        return _number(self.value, self.fmt) + (f" {self.unit}" if self.unit else "")


@dataclass
class Outcome:
    """One benchmark's verdict: ``value`` (a ratio) against ``limit``, and the numbers behind it.

    ``figures`` are further figures of the same run (each with its own target) that must hold too;
    the summary of `make bench` shows one row per figure."""

    name: str
    metric: str  # what `value` is, e.g. "all-50 / single"
    value: float | None  # None: the benchmark could not measure (an error)
    limit: float
    details: list[tuple[str, str]] = field(default_factory=list)  # (measure, value) rows
    notes: list[str] = field(default_factory=list)
    extra_checks: list[tuple[str, bool]] = field(default_factory=list)  # must all hold too
    error: str | None = None
    at_least: bool = False  # the target is value >= limit
    unit: str = ""  # of value and limit; "" for a ratio
    fmt: str = ".3f"
    figures: list[Figure] = field(default_factory=list)

    @property
    def all_figures(self) -> list[Figure]:
        first = Figure(self.metric, self.value, self.limit, self.at_least, self.unit, self.fmt)
        return [first, *self.figures]

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and all(f.met for f in self.all_figures)
            and all(ok for _, ok in self.extra_checks)
        )

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return f"FAIL {self.name}: error: {self.error}"
        failed = [what for what, ok in self.extra_checks if not ok]
        word = "PASS" if self.passed else "FAIL"
        line = f"{word} {self.name}: " + "; ".join(
            f"{f.metric} = {f.measured} (for information)"
            if f.informative
            else f"{f.metric} = {f.measured} (target {f.target}{'' if f.met else ', missed'})"
            for f in self.all_figures
        )
        if failed:
            line += "; also failed: " + ", ".join(failed)
        return line


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Left-aligned text columns, numbers right-aligned."""
    all_rows = [list(header)] if header else []
    all_rows += [list(r) for r in rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(all_rows[0]))]

    def fmt(row: list[str]) -> str:
        cells = []
        for i, cell in enumerate(row):
            numeric = cell[:1].isdigit() or (cell[:1] in "-+." and cell[1:2].isdigit())
            cells.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        return "  ".join(cells).rstrip()

    lines = []
    if header:
        lines.append(fmt(all_rows[0]))
        lines.append("  ".join("-" * w for w in widths))
        all_rows = all_rows[1:]
    lines.extend(fmt(r) for r in all_rows)
    return "\n".join(lines)


def report(outcome: Outcome) -> str:
    """The benchmark's own table, its notes and its one-line verdict."""
    parts = [f"== {outcome.name} ==", table(outcome.details, ("measure", "value"))]
    parts.extend(f"note: {n}" for n in outcome.notes)
    parts.append(outcome.verdict)
    return "\n".join(parts)


def finish(outcome: Outcome) -> int:
    """A benchmark run alone: its report printed; exit status 0 when it passed, else 1."""
    print(report(outcome))
    return 0 if outcome.passed else 1


def options(doc: str, **defaults: Any) -> argparse.ArgumentParser:
    """The command line of a benchmark run alone: the first paragraph of its docstring, and an
    option ``--name`` for each keyword (of its default's type, ``_`` written ``-``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for name, default in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return parser


def bench_main(
    doc: str, run: Callable[..., Outcome], argv: list[str] | None, **defaults: Any
) -> int:
    """`main()` of a benchmark whose options are ``defaults`` (see ``options()``), each passed to
    ``run`` by name."""
    return finish(run(**vars(options(doc, **defaults).parse_args(argv))))


def run_benchmark(
    measure: Callable[..., Awaitable[Outcome]], *args: Any, prefix: str, timeout: float,
    failed: Outcome, context: str = "",
) -> Outcome:  # fmt: skip
    """``measure(workdir, *args)`` in a fresh temporary directory (named from ``prefix``), within
    ``timeout`` seconds, with the bot's logging quiet. Should it raise, ``failed`` (the outcome's
    name, metric and target) is returned with the error, ``context`` beside its type."""
    quiet_logging()

    async def in_tempdir() -> Outcome:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            async with asyncio.timeout(timeout):
                return await measure(Path(tmp), *args)

    try:
        return asyncio.run(in_tempdir())
    except Exception as problem:
        where = f" ({context})" if context else ""
        return dataclasses.replace(
            failed, value=None, error=f"{type(problem).__name__}{where}: {problem}"
        )


def seconds(value: float) -> str:
    return f"{value:.3f} s"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` from 0 to 100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def quiet_logging() -> None:
    """The bot's structlog output at warning and above only, on stderr (benchmark output stays
    readable); libraries likewise."""
    from bot.logging import configure_logging

    configure_logging("warning")
    logging.getLogger("nio").setLevel(logging.ERROR)


# -- processes ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used from now on, by name: each of ``sources`` is a process id, or a function
    giving seconds used so far (``time.process_time`` for this process)."""

    def __init__(self, sources: Mapping[str, int | Callable[[], float]]) -> None:
        self.readers = {
            what: source if callable(source) else (lambda pid=source: cpu_seconds(pid))
            for what, source in sources.items()
        }
        self.before = {what: read() for what, read in self.readers.items()}

    def used(self) -> dict[str, float]:
        return {what: read() - self.before[what] for what, read in self.readers.items()}


def cpu_text(cpu: Mapping[str, float]) -> str:
    """``Synapse 1.23 s, bot 0.45 s``."""
    return ", ".join(f"{what} {s:.2f} s" for what, s in cpu.items())


def cpu_medians(samples: Sequence[Mapping[str, float]]) -> str:
    """The median of each process's CPU seconds over several samples (bursts): ``Synapse 1.23,
    bot 0.45 s``."""
    return ", ".join(
        f"{what} {statistics.median(s[what] for s in samples):.2f}" for what in samples[0]
    ) + " s"  # fmt: skip


def counted(pairs: Iterable[tuple[str, int]]) -> str:
    """``bot.warning x3, error bot.failed x1``, or ``none``."""
    return ", ".join(f"{what} x{n}" for what, n in pairs) or "none"


def memory_kib(pid: int) -> dict[str, int]:
    """The process's memory lines of /proc/<pid>/status in KiB: VmRSS, VmHWM (peak RSS), RssAnon,
    RssFile, RssShmem, VmSwap."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSwap"):
            values[key] = int(rest.split()[0])
    return values


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


@dataclass
class Line:
    """One output line of a child process, with when it arrived (read by a thread, so the time
    does not depend on the benchmark's event loop being free)."""

    monotonic: float
    wall: float
    text: str
    data: dict[str, Any] | None  # the JSON object, for the bot's `format = "json"` log lines

    @property
    def event(self) -> str | None:
        return None if self.data is None else self.data.get("event")

    @property
    def level(self) -> str | None:
        return None if self.data is None else self.data.get("level")


class ChildProcess:
    """A child process in its own session, its stdout and stderr merged into one pipe that a
    thread reads line by line (kept in ``lines``, and written to ``log_path``). Stopped at exit
    with the harness's servers (tests/harness/processes.py) if the benchmark fails midway."""

    def __init__(self, args: list[str], *, log_path: Path, cwd: Path = REPO_ROOT) -> None:
        self.args = args
        self.log_path = log_path
        self.cwd = cwd
        self.lines: list[Line] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.launched_monotonic = 0.0
        self.launched_wall = 0.0
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def launch(self, env: dict[str, str] | None = None) -> None:
        from tests.harness.processes import track

        self.launched_wall = time.time()
        self.launched_monotonic = time.monotonic()
        self.process = subprocess.Popen(
            self.args, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip
        track(self)
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"read {self.pid}")
        self._reader.start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with open(self.log_path, "ab") as copy:
            for raw in self.process.stdout:
                now, wall = time.monotonic(), time.time()
                copy.write(raw)
                copy.flush()
                text = raw.decode(errors="replace").rstrip("\n")
                data = None
                if text.startswith("{"):
                    with contextlib.suppress(ValueError):
                        data = json.loads(text)
                self.lines.append(Line(now, wall, text, data if isinstance(data, dict) else None))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_for(
        self, predicate: Callable[[Line], bool], timeout: float, what: str, start: int = 0
    ) -> Line:
        """The first output line (from index ``start``) matching ``predicate``, waiting for it."""
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            lines = self.lines
            for line in lines[seen:]:
                if predicate(line):
                    return line
            seen = len(lines)
            if not self.running:
                await asyncio.sleep(0.1)  # the reader may still be catching up
                if not any(predicate(line) for line in self.lines[seen:]):
                    raise RuntimeError(
                        f"{self.args[0]} ended ({self.process and self.process.returncode}) "
                        f"before {what}:\n{self.tail()}"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout} s:\n{self.tail()}")
            await asyncio.sleep(0.01)

    def tail(self, count: int = 30) -> str:
        return "\n".join(line.text[:400] for line in self.lines[-count:]) or "<no output>"

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM (a graceful stop), SIGKILL if it lingers; returns the exit status."""
        from tests.harness.processes import terminate, untrack

        process = self.process
        if process is not None:
            terminate(process, timeout=timeout)
            if self._reader is not None:
                self._reader.join(5)
        untrack(self)
        return None if process is None else process.returncode

    async def close(self) -> int | None:
        return await asyncio.to_thread(self.stop)


def community_bot_command() -> list[str]:
    """`community-bot` as installed in the interpreter's environment (the console script), or
    `python -m bot.cli` where it is not installed."""
    script = Path(sys.executable).parent / "community-bot"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def write_bot_config(
    path: Path,
    synapse: Any,
    account: Any,
    data_dir: Path,
    *,
    encryption: bool = True,
    admins: Sequence[str] = (),
    database_url: str | None = None,
    level: str = "info",
    extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The bot's TOML config as tests/harness/bot.py writes it (autojoin from the homeserver's
    users, a free web port), with production's JSON log lines, so their events can be read."""
    from tests.harness.bot import bot_config, write_config

    sections = bot_config(
        synapse, account, data_dir, admins=list(admins), encryption=encryption, extra=extra
    )
    sections["logging"] = {"level": level, "format": "json"}
    if database_url is not None:
        sections["database"] = {"url": database_url}
    return write_config(path, sections)


class BotProcess(ChildProcess):
    """The real bot: `community-bot run --config <path>`, a process of its own as in production."""

    def __init__(self, config_path: Path, user_id: str, *, log_path: Path) -> None:
        super().__init__([*community_bot_command(), "run", "--config", str(config_path)],
                         log_path=log_path)  # fmt: skip
        self.config_path = config_path
        self.user_id = user_id
        self.ready_line: Line | None = None

    async def start(self, ready_timeout: float = 60) -> Line:
        """Launch and wait for the `bot.ready` log line."""
        self.launch()
        self.ready_line = await self.wait_for(
            lambda line: line.event == "bot.ready", ready_timeout, "bot.ready"
        )
        return self.ready_line

    def problems(self) -> collections.Counter[str]:
        """The bot's log lines at warning and above, by level and event name."""
        return collections.Counter(
            f"{line.level} {line.event}"
            for line in self.lines
            if line.level in ("warning", "error", "critical")
        )


class EchoBot(ChildProcess):
    """The baseline: bench/echo_bot.py, a minimal matrix-nio client in a process of its own
    (``mode`` "echo" answers `!ping`, "relay" asks the model stub and posts its answer)."""

    def __init__(self, spec: dict[str, Any], *, workdir: Path, name: str = "echo") -> None:
        spec_path = workdir / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        script = Path(__file__).resolve().parent / "echo_bot.py"
        super().__init__([sys.executable, str(script), str(spec_path)],
                         log_path=workdir / f"{name}.log")  # fmt: skip
        self.user_id: str = spec["user_id"]

    async def start(self, ready_timeout: float = 60) -> None:
        self.launch()
        await self.wait_for(lambda line: line.text == "ready", ready_timeout, "echo bot ready")


def echo_spec(
    homeserver: str, account: Any, store: Path, *, mode: str = "echo", encryption: bool = True,
    stub_url: str | None = None, api_key: str | None = None, log_in: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """What bench/echo_bot.py reads. With ``log_in`` it logs in with the account's password and
    creates a device of its own (as the bot does at start-up); otherwise it takes over the
    account's access token and device."""
    spec = {
        "homeserver": homeserver, "user_id": account.user_id, "device_id": account.device_id,
        "access_token": account.access_token, "store": str(store), "mode": mode,
        "encryption": encryption, "stub_url": stub_url, "api_key": api_key,
    }  # fmt: skip
    if log_in:
        spec.update(device_id=None, access_token=None, password=account.password)
    return spec


def bot_process(
    synapse: Any, account: Any, workdir: Path, *, name: str = "bot", data_dir: Path | None = None,
    **config: Any,
) -> BotProcess:  # fmt: skip
    """The bot for ``account``, not launched yet: its config ``<name>.toml`` (``config`` as
    ``write_bot_config()`` takes it) and its log ``<name>.log`` in ``workdir``, its data in
    ``data_dir`` (``workdir/data`` unless given)."""
    path = write_bot_config(
        workdir / f"{name}.toml", synapse, account, data_dir or workdir / "data", **config
    )
    return BotProcess(path, account.user_id, log_path=workdir / f"{name}.log")


def echo_process(synapse: Any, account: Any, workdir: Path, *, name: str = "echo",
                 **spec: Any) -> EchoBot:  # fmt: skip
    """The echo bot (or relay) for ``account``, not launched yet: its store ``<name>-store``, spec
    and log in ``workdir``; ``spec`` as ``echo_spec()`` takes it."""
    return EchoBot(echo_spec(synapse.base_url, account, workdir / f"{name}-store", **spec),
                   workdir=workdir, name=name)  # fmt: skip


@contextlib.asynccontextmanager
async def running_synapse(
    workdir: Path, *, start_timeout: float = 60, **options: Any
) -> AsyncIterator[Any]:
    """The harness's Synapse (tests/harness/synapse.py) in ``workdir/synapse``, relaxed rate limits
    unless ``options`` say otherwise, stopped on the way out."""
    from tests.harness.synapse import SynapseServer

    synapse = SynapseServer(workdir / "synapse", **{"relaxed_rate_limits": True, **options})
    await asyncio.to_thread(synapse.start, start_timeout)
    try:
        yield synapse
    finally:
        await asyncio.to_thread(synapse.stop)


async def close_all(members: Iterable[Any], *processes: ChildProcess | None) -> None:
    """At the end of a run: the members' clients (closed at once, whatever fails), then each
    process that was made, in order."""
    await asyncio.gather(*(m.close() for m in members), return_exceptions=True)
    for process in processes:
        if process is not None:
            await process.close()


def stub_gpt(stub: Any, api_key: str) -> dict[str, Any]:
    """The bot's ``[gpt]`` section for the project's model stub (tests/harness/llm_stub.py)."""
    return {"base_url": stub.base_url, "api_key": api_key, "model": "stub-model",
            "max_retries": 0, "timeout": 30}  # fmt: skip


async def link_members(database_url: str, user_ids: Iterable[str]) -> None:
    """The bot's store migrated to head and each member linked to an SSO identity (the
    assistant requires it), before the bot starts: no "you are linked" notice races the run."""
    from bot.store.database import Database
    from bot.store.migrate import upgrade_to_head
    from tests.harness.linking import link

    db = Database(database_url)
    try:
        await upgrade_to_head(db)
        for user_id in user_ids:
            await link(db, user_id)
    finally:
        await db.close()


# -- members -----------------------------------------------------------------------------------------


async def register(synapse: Any, prefix: str, count: int) -> list[Any]:
    """`count` fresh accounts (registered in a thread: the admin API calls are synchronous)."""
    return await asyncio.to_thread(lambda: [synapse.fresh_account(prefix) for _ in range(count)])


async def log_in(synapse: Any, accounts: Sequence[Any]) -> list[Any]:
    """Logged-in members (TestUser, syncing in the background), without end-to-end encryption in
    their clients: the rooms of these benchmarks are plain, and 20 crypto stores in this process
    would only slow it down."""
    from tests.harness.matrix_user import TestUser, default_client_config

    config = default_client_config(encryption_enabled=False)
    users = await asyncio.gather(
        *(TestUser.login(synapse.base_url, a, client_config=config, first_sync_timeout=60)
          for a in accounts),
        return_exceptions=True,
    )  # fmt: skip
    failed = [u for u in users if isinstance(u, BaseException)]
    if failed:
        await asyncio.gather(*(u.close() for u in users if not isinstance(u, BaseException)))
        raise RuntimeError(f"{len(failed)} member(s) could not log in: {failed[0]!r}")
    return list(users)


async def open_dm(user: Any, other: str, timeout: float = 60) -> str:
    """A DM of ``user`` with ``other`` (invited as direct), once ``other`` has joined it."""
    room = await user.create_room(invite=[other], is_direct=True)
    await user.wait_for_membership(room, other, "join", timeout=timeout)
    return room


@dataclass
class RoundTrip:
    """One command and its reply, seen from the member's client."""

    total: float  # from sending until the reply is in the member's client
    to_server: float | None  # sending -> the homeserver created the command (origin_server_ts)
    handling: float | None  # command created -> reply created (the responder's sync and work)
    back: float | None  # reply created -> in the member's client
    body: str  # of the reply
    sent: float  # monotonic, just before sending
    seen: float  # monotonic, when the reply arrived


def is_reply_to(event: dict[str, Any], sender: str, event_id: str) -> bool:
    relates = event.get("content", {}).get("m.relates_to") or {}
    return (
        event.get("sender") == sender
        and event.get("type") == "m.room.message"
        and (relates.get("m.in_reply_to") or {}).get("event_id") == event_id
    )


async def round_trip(
    user: Any, room: str, responder: str, body: str = "!ping", timeout: float = 30
) -> RoundTrip:
    """Send ``body`` and wait for ``responder``'s reply to it (m.in_reply_to that event)."""
    sent, sent_wall = time.monotonic(), time.time()
    event_id = await user.send_text(room, body)
    reply = await user.wait_for_event(
        room, lambda e: is_reply_to(e, responder, event_id), timeout, after_event_id=event_id
    )
    seen, seen_wall = time.monotonic(), time.time()
    command_ts = next(
        (e["origin_server_ts"] / 1000 for e in user.events(room) if e.get("event_id") == event_id),
        None,
    )
    reply_ts = reply["origin_server_ts"] / 1000
    return RoundTrip(
        total=seen - sent,
        to_server=None if command_ts is None else command_ts - sent_wall,
        handling=None if command_ts is None else reply_ts - command_ts,
        back=seen_wall - reply_ts,
        body=str(reply["content"].get("body", "")),
        sent=sent,
        seen=seen,
    )


@dataclass
class Target:
    """Where a member sends a command and who answers it."""

    room: str
    responder: str
    body: str = "!ping"


@dataclass
class Rounds:
    trips: dict[str, list[RoundTrip]]  # by target
    cpu: dict[str, float]  # CPU seconds used during the rounds, by process
    wall: float  # seconds the rounds took


async def rounds_in_turn(
    member: Any, targets: Mapping[str, Target], rounds: int, *, warm_up: int = 0,
    cpu_of: Mapping[str, int | Callable[[], float]] | None = None,
) -> Rounds:  # fmt: skip
    """``warm_up`` round trips to each target (not kept), then ``rounds`` rounds of one round
    trip to each, one after another, in an order that rotates every round (with two targets it
    alternates: neither is always first). ``cpu_of``: the processes whose CPU the rounds count."""
    for _ in range(warm_up):
        for target in targets.values():
            await round_trip(member, target.room, target.responder, target.body)
    keys = list(targets)
    trips: dict[str, list[RoundTrip]] = {key: [] for key in keys}
    cpu = CpuMeter(cpu_of or {})
    started = time.monotonic()
    for i in range(rounds):
        for key in keys[i % len(keys) :] + keys[: i % len(keys)]:
            target = targets[key]
            trips[key].append(await round_trip(member, target.room, target.responder, target.body))
    wall = time.monotonic() - started
    return Rounds(trips, cpu.used(), wall)


def split(trips: Sequence[RoundTrip]) -> str:
    """p50 of each part of a round trip, from the homeserver's timestamps."""

    def p50(values: list[float | None]) -> str:
        present = [v for v in values if v is not None]
        return f"{statistics.median(present) * 1000:.0f}" if present else "-"

    return (
        f"to homeserver {p50([t.to_server for t in trips])}, "
        f"handling {p50([t.handling for t in trips])}, "
        f"back {p50([t.back for t in trips])} ms"
    )


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def p50_p95(values: Sequence[float]) -> str:
    return f"{median(values) * 1000:.1f} / {percentile(values, 95) * 1000:.1f} ms"


def machine() -> str:
    """CPU model, cores and load, for the tables."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, {model}; load average {load}"
