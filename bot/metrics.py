"""Prometheus metrics: what every part reports, and the listener that serves them.

Every part is handed a :class:`Metrics` and calls it where things happen (a command handled, a
rate limit waited out, an answer from the model). The base class does nothing: with metrics off
(the default) nothing is imported and a call costs one method lookup. :class:`PrometheusMetrics`
counts into its own ``CollectorRegistry`` (never the global one), so two bots in one process,
or tests, never mix their numbers. Values that are states rather than events (the age of the last
sync, the outbox's depth) are read when Prometheus scrapes, not kept up to date on the hot path;
the outbox is asked at most every ``OUTBOX_CACHE_S`` seconds.
Protections call ``metrics.protection_fired(name, action)``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from aiohttp import web
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

PREFIX = "community_bot_"
OUTBOX_CACHE_S = 5.0  # a scrape every few seconds costs the database one query at most this often
OUTBOX_QUERY_TIMEOUT_S = 2.0
MAX_MODEL_LABELS = 20  # rooms may name any model: past this many, the rest count as "other"
LABEL_LIMIT = 64
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ASSISTANT_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

# Outcomes of a command, as counted.
OK, REJECTED, FAILED, UNDELIVERED = "ok", "rejected", "failed", "undelivered"

OutboxBacklog = Callable[[], Awaitable[tuple[int, datetime | None]]]


class Metrics:
    """Metrics off: every call does nothing. The interface every part uses."""

    enabled = False

    def command_handled(self, command: str, outcome: str, seconds: float) -> None:
        """A command ran: its canonical name (or "unknown"), ok/rejected/failed/undelivered."""

    def events_handled(self, count: int) -> None:
        """Events from a sync batch passed to the handlers."""

    def synced(self, response: Any) -> None:
        """A sync batch was handled (a nio SyncResponse: rooms.join[...].timeline.events)."""

    def rate_limited(self, seconds: float) -> None:
        """The homeserver said M_LIMIT_EXCEEDED; the bot waits `seconds` before trying again."""

    def assistant_answered(
        self, model: str, seconds: float, prompt_tokens: int | None, completion_tokens: int | None
    ) -> None:
        """The model answered (tokens as the endpoint reported them, None when it did not)."""

    def assistant_failed(self, model: str, error: str, seconds: float) -> None:
        """A request to the model failed; `error` is a short kind, e.g. RateLimitError."""

    def protection_fired(self, protection: str, action: str) -> None:
        """A protection acted (e.g. "flood", "redact"). Names must come from code, not members."""

    def database_error(self, error: str) -> None:
        """The database driver raised (the exception's class name)."""

    def watch_sync(self, last_synced: Callable[[], float | None]) -> None:
        """Where the age of the last sync is read at scrape time (a time.monotonic() value)."""

    def watch_outbox(self, backlog: OutboxBacklog) -> None:
        """Where the outbox's depth and oldest message are read at scrape time."""

    def watch_database(self, engine: AsyncEngine) -> None:
        """Count the errors the engine's driver raises."""


NO_METRICS = Metrics()


def _label(value: str) -> str:
    return value[:LABEL_LIMIT] or "none"


class PrometheusMetrics(Metrics):
    """Metrics on: counts into a registry of its own. Build it off the event loop (the first
    import of prometheus_client takes tens of milliseconds): ``await asyncio.to_thread(...)``."""

    enabled = True

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
        )
        from prometheus_client.exposition import generate_latest  # imported now, not on scrape
        from prometheus_client.process_collector import ProcessCollector

        disable_created_metrics()  # no *_created series: half the lines, nothing lost
        self._generate = generate_latest
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)  # memory, CPU, open files: read from /proc at scrape

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return Counter(PREFIX + name, doc, labels, registry=registry)

        self._commands = counter("commands", "Commands handled.", ("command", "outcome"))
        self._command_seconds = Histogram(
            PREFIX + "command_duration_seconds",
            "From a command's arrival to its reply being sent.", ("command",),
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self._events = counter("events_handled", "Events from syncs passed to the handlers.")
        self._syncs = counter("syncs", "Sync batches handled.")
        self._sync_lag = Gauge(
            PREFIX + "sync_lag_seconds",
            "How old the newest event of the last sync batch carrying events was when it "
            "arrived (homeserver clock against ours).",
            registry=registry,
        )
        self._rate_waits = counter(
            "rate_limit_waits", "Times the homeserver answered M_LIMIT_EXCEEDED and the bot waited."
        )
        self._rate_seconds = counter(
            "rate_limit_wait_seconds", "Seconds spent waiting out the homeserver's rate limit."
        )
        self._assistant_requests = counter(
            "assistant_requests", "Requests to the assistant's model.", ("model", "outcome")
        )
        self._assistant_seconds = Histogram(
            PREFIX + "assistant_request_duration_seconds",
            "How long the model took to answer (successful requests, streaming included).",
            ("model",), buckets=ASSISTANT_BUCKETS, registry=registry,
        )  # fmt: skip
        self._assistant_tokens = counter(
            "assistant_tokens", "Tokens the endpoint reported, by kind (prompt, completion).",
            ("model", "kind"),
        )  # fmt: skip
        self._assistant_errors = counter(
            "assistant_errors",
            "Failed requests to the model, by kind of error.",
            ("model", "error"),
        )
        self._protections = counter(
            "protections_fired", "Protections that acted, by protection and action.",
            ("protection", "action"),
        )  # fmt: skip
        self._db_errors = counter(
            "database_errors", "Errors raised by the database driver.", ("error",)
        )
        self._models: set[str] = set()
        self._command_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._last_synced: Callable[[], float | None] | None = None
        self._outbox: OutboxBacklog | None = None
        self._outbox_value: tuple[int, datetime | None] | None = None
        self._outbox_read_at = -OUTBOX_CACHE_S
        self._outbox_lock = asyncio.Lock()
        registry.register(_ScrapeTime(self))

    # -- events ---------------------------------------------------------------------------------

    def command_handled(self, command: str, outcome: str, seconds: float) -> None:
        children = self._command_children.get((command, outcome))
        if children is None:  # once per command and outcome: labels() takes a lock
            label = _label(command)
            children = (self._commands.labels(label, outcome), self._command_seconds.labels(label))
            self._command_children[(command, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    def events_handled(self, count: int) -> None:
        if count:
            self._events.inc(count)

    def synced(self, response: Any) -> None:
        self._syncs.inc()
        newest = 0
        for info in response.rooms.join.values():  # one look per room, none per event
            events = info.timeline.events
            if events:
                newest = max(newest, getattr(events[-1], "server_timestamp", 0) or 0)
        if newest:
            self._sync_lag.set(max(0.0, time.time() - newest / 1000))

    def rate_limited(self, seconds: float) -> None:
        self._rate_waits.inc()
        self._rate_seconds.inc(seconds)

    def _model(self, model: str) -> str:
        model = _label(model)
        if model not in self._models:
            if len(self._models) >= MAX_MODEL_LABELS:
                return "other"
            self._models.add(model)
        return model

    def assistant_answered(
        self, model: str, seconds: float, prompt_tokens: int | None, completion_tokens: int | None
    ) -> None:
        model = self._model(model)
        self._assistant_requests.labels(model, OK).inc()
        self._assistant_seconds.labels(model).observe(seconds)
        if prompt_tokens:
            self._assistant_tokens.labels(model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self._assistant_tokens.labels(model, "completion").inc(completion_tokens)

    def assistant_failed(self, model: str, error: str, seconds: float) -> None:
        model = self._model(model)
        self._assistant_requests.labels(model, "error").inc()
        self._assistant_errors.labels(model, _label(error)).inc()

    def protection_fired(self, protection: str, action: str) -> None:
        self._protections.labels(_label(protection), _label(action)).inc()

    def database_error(self, error: str) -> None:
        self._db_errors.labels(_label(error)).inc()

    # -- read at scrape time --------------------------------------------------------------------

    def watch_sync(self, last_synced: Callable[[], float | None]) -> None:
        self._last_synced = last_synced

    def watch_outbox(self, backlog: OutboxBacklog) -> None:
        self._outbox = backlog

    def watch_database(self, engine: AsyncEngine) -> None:
        from sqlalchemy import event

        def on_error(context: Any) -> None:
            self.database_error(type(context.original_exception).__name__)

        event.listen(engine.sync_engine, "handle_error", on_error)

    async def _refresh_outbox(self) -> None:
        if self._outbox is None:
            return
        async with self._outbox_lock:
            if time.monotonic() - self._outbox_read_at < OUTBOX_CACHE_S:
                return
            try:
                async with asyncio.timeout(OUTBOX_QUERY_TIMEOUT_S):
                    self._outbox_value = await self._outbox()
            except Exception as problem:  # the database is away: show nothing rather than old news
                log.debug("metrics.outbox_unavailable", error=type(problem).__name__)
                self._outbox_value = None
            self._outbox_read_at = time.monotonic()

    async def exposition(self) -> bytes:
        """The text Prometheus scrapes."""
        await self._refresh_outbox()
        return self._generate(self.registry)


class _ScrapeTime:
    """The gauges computed when Prometheus asks: sync age and the outbox."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._m = metrics

    def describe(self) -> list[Any]:
        return []  # nothing to check for name clashes: the names below are ours alone

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        m = self._m
        last = m._last_synced() if m._last_synced is not None else None
        if last is not None:
            yield GaugeMetricFamily(
                PREFIX + "last_sync_age_seconds", "Seconds since the last sync batch was handled.",
                value=max(0.0, time.monotonic() - last),
            )  # fmt: skip
        if m._outbox_value is not None:
            depth, oldest = m._outbox_value
            yield GaugeMetricFamily(
                PREFIX + "outbox_depth", "Messages waiting in the outbox.", value=depth
            )
            age = (datetime.now(UTC) - _aware(oldest)).total_seconds() if oldest else 0.0
            yield GaugeMetricFamily(
                PREFIX + "outbox_oldest_age_seconds",
                "Age of the oldest message waiting in the outbox (0 when it is empty).",
                value=max(0.0, age),
            )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def load_metrics(enabled: bool) -> Metrics:
    """The metrics to wire: real ones when a listener is configured, built in a worker thread."""
    if not enabled:
        return NO_METRICS
    return await asyncio.to_thread(PrometheusMetrics)


async def serve_metrics(metrics: PrometheusMetrics, host: str, port: int) -> web.AppRunner:
    """Serve ``GET /metrics`` on its own listener (keep it off the public web app)."""
    from aiohttp import web

    from bot.listener import listen

    content_type = "text/plain; version=0.0.4; charset=utf-8"

    async def scrape(_request: web.Request) -> web.Response:
        return web.Response(body=await metrics.exposition(), headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return await listen(app, host, port, setting="metrics.listen")
