"""Metrics and health checks without a homeserver: config keys, the exposition format, the
scrape-time gauges and their cache, the readiness probe, and /healthz and /readyz over HTTP
(SQLite, and a PostgreSQL URL nothing answers at)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.config import ConfigError, load_config
from bot.matrix.readiness import MatrixReadiness
from bot.metrics import MAX_MODEL_LABELS, NO_METRICS, PrometheusMetrics
from bot.store.database import Database
from tests.harness.synapse import free_port
from web_callback.health import add_health_routes

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "CB_MATRIX_HOMESERVER": "https://matrix.example.org",
    "CB_MATRIX_USER_ID": "@bot:example.org",
    "CB_MATRIX_ACCESS_TOKEN": "syt_secret",
}


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


# -- config ---------------------------------------------------------------------------------------


def test_metrics_are_off_and_readiness_allows_90s_by_default() -> None:
    config = load_config(None, env=ENV)
    assert config.metrics.listen is None and config.metrics.address is None
    assert config.web.ready_max_sync_age == timedelta(seconds=90)


def test_metrics_listen_is_a_host_and_port() -> None:
    config = load_config(None, env={**ENV, "CB_METRICS_LISTEN": "10.0.0.5:9000"})
    assert config.metrics.address == ("10.0.0.5", 9000)
    assert load_config(None, env={**ENV, "CB_METRICS_LISTEN": "[::1]:9100"}).metrics.address == (
        "::1", 9100,
    )  # fmt: skip


@pytest.mark.parametrize("listen", ["9000", "localhost", "127.0.0.1:0", "127.0.0.1:70000", "a b:1"])
def test_a_bad_metrics_listen_is_one_clear_problem(listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={**ENV, "CB_METRICS_LISTEN": listen})
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("metrics.listen: ")


def test_ready_max_sync_age_is_at_least_a_second() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={**ENV, "CB_WEB_READY_MAX_SYNC_AGE": "0s"})
    assert info.value.problems == [
        'web.ready_max_sync_age: must be at least 1s, got "0s" (from CB_WEB_READY_MAX_SYNC_AGE)'
    ]


def test_the_example_config_documents_the_keys() -> None:
    example = (REPO_ROOT / "config.example.toml").read_text()
    assert "[metrics]" in example and '# listen = "127.0.0.1:9000"' in example
    assert '# ready_max_sync_age = "90s"' in example


# -- the metrics ------------------------------------------------------------------------------------


def test_metrics_off_cost_nothing_and_import_nothing() -> None:
    NO_METRICS.command_handled("ping", "ok", 0.1)  # every call is there, and does nothing
    NO_METRICS.protection_fired("flood", "redact")
    assert not NO_METRICS.enabled
    code = "import sys, bot.app, bot.cli; print('prometheus_client' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert result.stdout.strip() == "False"  # loaded only when [metrics] listen is set


async def test_every_series_is_exposed_with_its_labels() -> None:
    metrics = PrometheusMetrics()
    metrics.command_handled("ping", "ok", 0.04)
    metrics.command_handled("ping", "ok", 0.2)
    metrics.command_handled("unknown", "rejected", 0.01)
    metrics.events_handled(3)
    metrics.events_handled(0)
    metrics.rate_limited(1.5)
    metrics.assistant_answered("gpt-4o-mini", 1.2, 100, 20)
    metrics.assistant_answered("gpt-4o-mini", 0.8, None, None)  # an endpoint without usage
    metrics.assistant_failed("gpt-4o-mini", "RateLimitError", 0.1)
    metrics.protection_fired("flood", "redact")
    metrics.database_error("OperationalError")
    now_ms = datetime.now(UTC).timestamp() * 1000
    room = SimpleNamespace(
        timeline=SimpleNamespace(events=[SimpleNamespace(server_timestamp=now_ms - 2500)])
    )
    metrics.synced(SimpleNamespace(rooms=SimpleNamespace(join={"!a:x": room})))
    s = samples(await metrics.exposition())
    p = "community_bot_"
    assert s[(p + "commands_total", frozenset({("command", "ping"), ("outcome", "ok")}))] == 2
    assert (
        s[(p + "commands_total", frozenset({("command", "unknown"), ("outcome", "rejected")}))] == 1
    )
    assert s[(p + "command_duration_seconds_count", frozenset({("command", "ping")}))] == 2
    assert (
        s[(p + "command_duration_seconds_bucket", frozenset({("command", "ping"), ("le", "0.05")}))]
        == 1
    )
    assert s[(p + "events_handled_total", frozenset())] == 3
    assert s[(p + "syncs_total", frozenset())] == 1
    assert 2.4 < s[(p + "sync_lag_seconds", frozenset())] < 5
    assert s[(p + "rate_limit_waits_total", frozenset())] == 1
    assert s[(p + "rate_limit_wait_seconds_total", frozenset())] == 1.5
    model = ("model", "gpt-4o-mini")
    assert s[(p + "assistant_requests_total", frozenset({model, ("outcome", "ok")}))] == 2
    assert s[(p + "assistant_requests_total", frozenset({model, ("outcome", "error")}))] == 1
    assert s[(p + "assistant_request_duration_seconds_count", frozenset({model}))] == 2
    assert s[(p + "assistant_tokens_total", frozenset({model, ("kind", "prompt")}))] == 100
    assert s[(p + "assistant_tokens_total", frozenset({model, ("kind", "completion")}))] == 20
    assert s[(p + "assistant_errors_total", frozenset({model, ("error", "RateLimitError")}))] == 1
    assert (
        s[
            (
                p + "protections_fired_total",
                frozenset({("protection", "flood"), ("action", "redact")}),
            )
        ]
        == 1
    )
    assert s[(p + "database_errors_total", frozenset({("error", "OperationalError")}))] == 1
    assert s[("process_resident_memory_bytes", frozenset())] > 0
    # Not watched yet: no sync age, no outbox (rather than a made-up value).
    assert not any(name.startswith((p + "last_sync", p + "outbox")) for name, _ in s)


async def test_two_bots_in_one_process_count_apart() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.command_handled("ping", "ok", 0.1)
    key = ("community_bot_commands_total", frozenset({("command", "ping"), ("outcome", "ok")}))
    assert samples(await first.exposition())[key] == 1
    assert key not in samples(await second.exposition())


async def test_labels_stay_bounded() -> None:
    metrics = PrometheusMetrics()
    for i in range(MAX_MODEL_LABELS + 5):
        metrics.assistant_answered(f"model-{i}", 0.1, 1, 1)
    metrics.command_handled("x" * 500, "ok", 0.1)
    s = samples(await metrics.exposition())
    models = {
        dict(labels)["model"]
        for name, labels in s
        if name == "community_bot_assistant_requests_total"
    }
    assert len(models) == MAX_MODEL_LABELS + 1 and "other" in models
    commands = {
        dict(labels)["command"] for name, labels in s if name == "community_bot_commands_total"
    }
    assert commands == {"x" * 64}


async def test_scrape_time_gauges_read_the_sync_clock_and_a_cached_outbox() -> None:
    metrics = PrometheusMetrics()
    asked = 0
    oldest = datetime.now(UTC) - timedelta(minutes=5)

    async def backlog() -> tuple[int, datetime | None]:
        nonlocal asked
        asked += 1
        return 4, oldest

    import time

    metrics.watch_sync(lambda: time.monotonic() - 12)
    metrics.watch_outbox(backlog)
    s = samples(await metrics.exposition())
    await metrics.exposition()
    await asyncio.gather(metrics.exposition(), metrics.exposition())
    assert asked == 1  # scrapes in a row ask the database once (OUTBOX_CACHE_S)
    assert 12 <= s[("community_bot_last_sync_age_seconds", frozenset())] < 15
    assert s[("community_bot_outbox_depth", frozenset())] == 4
    assert 299 < s[("community_bot_outbox_oldest_age_seconds", frozenset())] < 330


async def test_an_unreachable_outbox_shows_no_numbers_rather_than_old_ones() -> None:
    metrics = PrometheusMetrics()

    async def away() -> tuple[int, datetime | None]:
        raise OSError("connection refused")

    metrics.watch_outbox(away)
    s = samples(await metrics.exposition())
    assert ("community_bot_outbox_depth", frozenset()) not in s


# -- readiness ---------------------------------------------------------------------------------------


def test_readiness_wants_a_login_and_a_recent_sync() -> None:
    now = [1000.0]
    probe = MatrixReadiness(timedelta(seconds=90), clock=lambda: now[0])
    assert probe() == {
        "matrix_login": "not logged in to the homeserver", "sync": "no sync with the homeserver yet",
    }  # fmt: skip
    probe.client = SimpleNamespace(logged_in=True)  # type: ignore[assignment]
    last = [990.0]
    probe.last_synced = lambda: last[0]
    assert probe() == {"matrix_login": None, "sync": None}
    now[0] = 1081.0
    assert probe()["sync"] == "last sync 91 s ago (allowed: 1m30s)"
    last[0] = 1080.0
    assert probe()["sync"] is None


async def serve_health(db: Database, probe) -> tuple[web.AppRunner, str]:  # type: ignore[no-untyped-def]
    app = web.Application()
    add_health_routes(app, db, probe)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_readyz_says_which_check_failed(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    problems: dict[str, str | None] = {"matrix_login": None, "sync": None}
    runner, base = await serve_health(db, lambda: problems)
    try:
        async with httpx.AsyncClient() as http:
            ready = await http.get(f"{base}/readyz")
            assert ready.status_code == 200
            assert ready.json() == {
                "status": "ready", "failed": [],
                "checks": {"matrix_login": "ok", "sync": "ok", "database": "ok"},
            }  # fmt: skip
            problems["sync"] = "last sync 120 s ago (allowed: 1m30s)"
            stale = await http.get(f"{base}/readyz")
            assert stale.status_code == 503
            assert stale.json()["failed"] == ["sync"]
            assert stale.json()["checks"]["sync"] == "last sync 120 s ago (allowed: 1m30s)"
            assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
    finally:
        await runner.cleanup()
        await db.close()


async def test_readyz_fails_when_the_database_does_not_answer_but_healthz_does_not() -> None:
    db = Database(f"postgresql+asyncpg://bot@127.0.0.1:{free_port()}/bot")  # nothing listens
    runner, base = await serve_health(db, None)  # `community-bot web`: the database alone
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{base}/readyz")
            assert response.status_code == 503
            assert response.json() == {
                "status": "not ready", "failed": ["database"],
                "checks": {"database": "the database does not answer"},
            }  # fmt: skip
            health = await http.get(f"{base}/healthz")
            assert health.status_code == 200 and health.json() == {"status": "ok"}
    finally:
        await runner.cleanup()
        await db.close()


async def test_a_metrics_port_in_use_is_a_clear_operator_error() -> None:
    import socket

    from bot.errors import OperatorError
    from bot.metrics import serve_metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            OperatorError, match=rf"^metrics.listen 127.0.0.1:{port} cannot be used"
        ):
            await serve_metrics(PrometheusMetrics(), "127.0.0.1", port)


async def test_the_listener_serves_the_exposition_and_nothing_else() -> None:
    from bot.metrics import serve_metrics

    metrics = PrometheusMetrics()
    metrics.command_handled("ping", "ok", 0.05)
    port = free_port()
    runner = await serve_metrics(metrics, "127.0.0.1", port)
    try:
        async with httpx.AsyncClient() as http:
            scraped = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert 'community_bot_commands_total{command="ping",outcome="ok"} 1.0' in scraped.text
            assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 404
    finally:
        await runner.cleanup()
