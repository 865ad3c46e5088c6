"""Metrics and health checks of the real bot against real Synapse, PostgreSQL and the LLM stub:
the metrics are scraped over HTTP while members use the bot, /healthz and /readyz are asked over
HTTP while the database and the homeserver go away (a TCP gate in front of each; the servers
themselves stay up for the other tests)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.community.outbox import Outbox
from bot.store.database import Database
from tests.harness.bot import running_bot
from tests.harness.linking import link_url
from tests.harness.llm_stub import LlmStub
from tests.harness.matrix_user import TestUser
from tests.harness.synapse import free_port
from tests.harness.tcp_gate import TcpGate
from tests.integration.test_bot_core import dm_with
from tests.unit.test_compose_example import healthcheck_command

pytestmark = pytest.mark.synapse

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: httpx.AsyncClient, port: int) -> Samples:
    response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def until(
    http: httpx.AsyncClient, port: int, check: Callable[[Samples], bool], timeout: float = 20
) -> Samples:
    """Scrape until `check` holds (what a reply shows a member is counted a moment after)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await scrape(http, port)
        if check(samples):
            return samples
        ours = {k: v for k, v in samples.items() if k[0].startswith("community_bot_")}
        assert asyncio.get_running_loop().time() < deadline, f"metrics did not move: {ours}"
        await asyncio.sleep(0.2)


async def readyz(http: httpx.AsyncClient, web_port: int) -> tuple[int, dict[str, Any]]:
    response = await http.get(f"http://127.0.0.1:{web_port}/readyz")
    return response.status_code, response.json()


async def readyz_until(
    http: httpx.AsyncClient, web_port: int, status: int, timeout: float = 30
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        code, body = await readyz(http, web_port)
        if code == status:
            return body
        assert asyncio.get_running_loop().time() < deadline, f"/readyz stayed {code}: {body}"
        await asyncio.sleep(0.25)


def override_bot_rate_limit(synapse, user_id: str, per_second: float, burst: int) -> None:
    admin = synapse.fresh_account("admin", admin=True)
    httpx.post(
        f"{synapse.base_url}/_synapse/admin/v1/users/{user_id}/override_ratelimit",
        headers={"Authorization": f"Bearer {admin.access_token}"},
        json={"messages_per_second": per_second, "burst_count": burst},
    ).raise_for_status()


async def docker_healthcheck(web_port: int) -> int:
    """The exit status of the Dockerfile's HEALTHCHECK command, run against this web port."""
    import os
    import subprocess
    import sys

    command = [sys.executable, *healthcheck_command()[1:]]
    env = {**os.environ, "CB_WEB_LISTEN": f"0.0.0.0:{web_port}"}
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, timeout=20, check=False
    )
    return done.returncode


def listening_ports() -> set[int]:
    """TCP ports this process listens on (its socket inodes matched in /proc/net/tcp*)."""
    import os
    from pathlib import Path

    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with_target = os.readlink(fd) if fd.is_symlink() else ""
        if match := re.fullmatch(r"socket:\[(\d+)\]", with_target):
            inodes.add(match.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def test_metrics_move_while_members_use_the_bot(synapse, tmp_path):
    metrics_port = free_port()
    async with LlmStub(api_key="sk-test") as stub:
        extra = {
            "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
            "gpt": {"base_url": stub.base_url, "api_key": "sk-test", "model": "stub-model",
                    "max_retries": 0, "timeout": 5.0, "stream": False},
        }  # fmt: skip
        account = synapse.fresh_account("bot")
        async with (
            running_bot(synapse, tmp_path, account=account, extra=extra) as bot,
            httpx.AsyncClient(timeout=10) as http,
        ):
            # A message for someone who never joins the DM waits in the outbox.
            db = Database(bot.config.database.url)
            try:
                await Outbox(db).put("hello", recipient=synapse.fresh_account("absent").user_id)
            finally:
                await db.close()
            first = await scrape(http, metrics_port)
            assert value(first, "community_bot_outbox_depth") == 1
            assert value(first, "community_bot_outbox_oldest_age_seconds") >= 0
            assert value(first, "community_bot_last_sync_age_seconds") < 10
            assert value(first, "community_bot_syncs_total") >= 1
            assert value(first, "process_resident_memory_bytes") > 0
            assert (
                value(first, "community_bot_commands_total", command="ping", outcome="ok") is None
            )

            alice_account = synapse.fresh_account("alice")
            await link_url(bot.config.database.url, alice_account.user_id)
            async with await TestUser.login(synapse.base_url, alice_account) as alice:
                room = await dm_with(alice, bot.user_id)
                await alice.ask(room, "!ping", sender=bot.user_id)
                await alice.ask(room, "!user @alice:localhost", sender=bot.user_id)  # not hers
                after = await until(http, metrics_port, lambda s: (
                    value(s, "community_bot_commands_total", command="user", outcome="rejected")
                ) == 1)  # fmt: skip
                assert (
                    value(after, "community_bot_commands_total", command="ping", outcome="ok") == 1
                )
                count = "community_bot_command_duration_seconds_count"
                assert value(after, count, command="ping") == 1
                assert (
                    0
                    < value(after, "community_bot_command_duration_seconds_sum", command="ping")
                    < 10
                )
                assert value(after, "community_bot_events_handled_total") >= 2  # the two commands
                assert value(after, "community_bot_sync_lag_seconds") is not None

                # The assistant: one answer, one failure, by model.
                await alice.ask(room, "tell me three words", sender=bot.user_id)
                stub.fail_next("500")
                await alice.ask(room, "and again", sender=bot.user_id)
                asked = await until(http, metrics_port, lambda s: value(
                    s, "community_bot_assistant_errors_total", model="stub-model",
                    error="InternalServerError",
                ) == 1)  # fmt: skip
                requests = "community_bot_assistant_requests_total"
                assert value(asked, requests, model="stub-model", outcome="ok") == 1
                assert value(asked, requests, model="stub-model", outcome="error") == 1
                tokens = "community_bot_assistant_tokens_total"
                assert value(asked, tokens, model="stub-model", kind="prompt") > 0
                # "Echo: tell me three words": five tokens as the stub counts them
                assert value(asked, tokens, model="stub-model", kind="completion") == 5
                seconds = "community_bot_assistant_request_duration_seconds_count"
                assert value(asked, seconds, model="stub-model") == 1

                # The homeserver's rate limit: the bot may send one message a second, burst 1.
                override_bot_rate_limit(synapse, account.user_id, 1, 1)
                sent = [await alice.send_text(room, "!ping") for _ in range(3)]
                await alice.wait_for_event(room, lambda e: e["sender"] == bot.user_id and (
                    e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")
                    == sent[-1]
                ), timeout=30)  # fmt: skip
                limited = await until(http, metrics_port, lambda s: (
                    value(s, "community_bot_commands_total", command="ping", outcome="ok") == 4
                ))  # fmt: skip
                assert value(limited, "community_bot_rate_limit_waits_total") >= 1
                assert value(limited, "community_bot_rate_limit_wait_seconds_total") > 0
                assert value(limited, "community_bot_database_errors_total") is None


async def test_metrics_are_off_by_default(synapse, tmp_path):
    web_port = free_port()
    before = listening_ports()
    async with (
        running_bot(synapse, tmp_path, web_port=web_port) as bot,
        httpx.AsyncClient(timeout=10) as http,
    ):
        assert not bot.app.metrics.enabled
        assert listening_ports() - before == {web_port}  # the web app, no metrics listener
        assert (await http.get(f"http://127.0.0.1:{web_port}/metrics")).status_code == 404
        body = await readyz_until(http, web_port, 200)
        assert body == {
            "status": "ready", "failed": [],
            "checks": {"matrix_login": "ok", "sync": "ok", "database": "ok"},
        }  # fmt: skip
        assert await docker_healthcheck(web_port) == 0


@pytest.mark.postgres
async def test_readyz_follows_the_database_and_the_sync(synapse, postgres, tmp_path):
    web_port, metrics_port = free_port(), free_port()
    url = postgres.fresh_database_url()
    async with (
        TcpGate(postgres.host, postgres.port) as db_gate,
        TcpGate("127.0.0.1", synapse.port) as hs_gate,
    ):
        gated_url = url.replace(f":{postgres.port}/", f":{db_gate.port}/")
        extra = {
            "matrix": {"homeserver": f"http://127.0.0.1:{hs_gate.port}"},
            "database": {"url": gated_url},
            "web": {"ready_max_sync_age": "5s"},
            "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        }
        async with (
            running_bot(synapse, tmp_path, web_port=web_port, extra=extra),
            httpx.AsyncClient(timeout=15) as http,
        ):
            health = f"http://127.0.0.1:{web_port}/healthz"
            assert (await readyz_until(http, web_port, 200))["status"] == "ready"

            db_gate.cut()  # the database goes away
            body = await readyz_until(http, web_port, 503)
            assert "database" in body["failed"], body
            assert body["checks"]["database"] == "the database does not answer"
            assert body["checks"]["matrix_login"] == "ok"
            assert (await http.get(health)).json() == {"status": "ok"}  # alive all along
            assert await docker_healthcheck(web_port) == 1  # the container turns unhealthy
            errors = await scrape(http, metrics_port)
            assert sum(
                v for (name, _), v in errors.items()
                if name == "community_bot_database_errors_total"
            ) >= 1  # fmt: skip
            db_gate.reopen()
            await readyz_until(http, web_port, 200)

            hs_gate.cut()  # the homeserver goes away: syncs stop
            body = await readyz_until(http, web_port, 503)
            assert body["failed"] == ["sync"], body
            assert re.fullmatch(r"last sync \d+ s ago \(allowed: 5s\)", body["checks"]["sync"])
            stale = await scrape(http, metrics_port)
            assert value(stale, "community_bot_last_sync_age_seconds") > 5
            assert (await http.get(health)).status_code == 200
            hs_gate.reopen()
            await readyz_until(http, web_port, 200, timeout=60)  # after the sync loop's back-off
