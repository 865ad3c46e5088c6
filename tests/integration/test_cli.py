"""`community-bot` as an operator runs it: a real process, real signals, real homeserver."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bot.store.migrate import head_revision
from tests.harness.bot import bot_config, write_config
from tests.harness.matrix_user import TestUser
from tests.harness.synapse import REPO_ROOT
from tests.integration.test_bot_core import dm_with

CLI = [sys.executable, "-m", "bot"]


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=REPO_ROOT,
    )  # fmt: skip


def test_check_config_accepts_the_example_and_hides_secrets():
    result = cli("check-config", str(REPO_ROOT / "config.example.toml"))
    assert result.returncode == 0, result.stderr
    assert "config ok" in result.stdout
    assert "change-me" not in result.stdout and "***" in result.stdout


def test_config_errors_are_one_line_each_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[matrix]\nhomeserver = "ftp://x"\nencryption = "maybe"\ncolour = 1\n[loging]\n')
    for args in (
        ("check-config", str(bad)),
        ("run", "--config", str(bad)),
        ("migrate", "--config", str(bad)),
    ):
        result = cli(*args)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert lines[0] == f"community-bot: configuration problems in {bad}:"
        text = result.stderr
        for key in (
            "matrix.homeserver",
            "matrix.encryption",
            "matrix.colour",
            "matrix.user_id",
            "loging",
        ):
            assert f"  {key}" in text, (key, text)


def test_missing_config_file_is_a_clear_error(tmp_path):
    result = cli("run", "--config", str(tmp_path / "nope.toml"))
    assert (
        result.returncode == 1
        and "file not found" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_migrate_brings_the_database_up_to_date(tmp_path):
    config = write_config(tmp_path / "c.toml", {
        "matrix": {"homeserver": "http://127.0.0.1:9", "user_id": "@b:x", "password": "p"},
        "data": {"dir": str(tmp_path / "data")},
    })  # fmt: skip
    first = cli("migrate", "--config", str(config))
    assert first.returncode == 0
    assert f"database at revision {head_revision()} (was None)" in first.stdout
    again = cli("migrate", "--config", str(config))
    assert "(up to date)" in again.stdout


@pytest.mark.synapse
def test_wrong_password_ends_with_a_clear_message(synapse, tmp_path):
    account = synapse.fresh_account("bot")
    account.password = "wrong-password"
    config = write_config(tmp_path / "c.toml", bot_config(synapse, account, tmp_path / "data"))
    result = cli("run", "--config", str(config))
    assert result.returncode == 1
    assert "community-bot: the homeserver refused the login for" in result.stderr
    assert "Traceback" not in result.stderr and "wrong-password" not in result.stderr


@pytest.mark.synapse
async def test_run_answers_logs_json_and_stops_cleanly_on_sigterm(synapse, tmp_path):
    account = synapse.fresh_account("bot")
    sections = bot_config(synapse, account, tmp_path / "data")
    sections["logging"] = {"level": "info", "format": "json"}
    config = write_config(tmp_path / "c.toml", sections)
    log_path = tmp_path / "bot.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [*CLI, "run", "--config", str(config)], stderr=log_file, cwd=REPO_ROOT
        )
    try:
        await wait_for_log(log_path, "bot.ready", process)
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("hal")) as hal:
            room = await dm_with(hal, account.user_id)
            ping = await hal.send_text(room, "!ping")
            await hal.wait_for_message(room, sender=account.user_id, after_event_id=ping)
            secret_text = "!help zz-private-words-zz"
            await hal.ask(room, secret_text, sender=account.user_id)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    records = [
        json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")
    ]
    handled = [r for r in records if r["event"] == "command.handled"]
    assert [r["command"] for r in handled] == ["ping", "help"]
    assert all(r["room_id"] == room and r["event_id"].startswith("$") for r in handled)
    assert handled[0]["event_id"] == ping
    assert records[-1]["event"] == "bot.stopped"
    raw = log_path.read_text()
    for secret in ("zz-private-words-zz", account.password):
        assert secret not in raw
    token = json.loads((tmp_path / "data" / "matrix-credentials.json").read_text())["access_token"]
    assert token not in raw


async def wait_for_log(
    path: Path, event: str, process: subprocess.Popen, timeout: float = 30
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if f'"event": "{event}"' in path.read_text():
            return
        if process.poll() is not None:
            raise AssertionError(f"the bot exited with {process.returncode}:\n{path.read_text()}")
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no {event} within {timeout} s:\n{path.read_text()}")


async def test_web_runs_alone_on_the_bots_database_and_stops_on_sigterm(tmp_path):
    import httpx

    from tests.harness.synapse import free_port

    port = free_port()
    config = write_config(tmp_path / "c.toml", {
        "matrix": {"homeserver": "http://127.0.0.1:9", "user_id": "@b:x", "password": "p"},
        "data": {"dir": str(tmp_path / "data")},
        "web": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
    })  # fmt: skip
    log_path = tmp_path / "web.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [*CLI, "web", "--config", str(config)], stderr=log_file, cwd=REPO_ROOT
        )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                try:
                    health = await http.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.1)
            assert health.json() == {"status": "ok"}
            unknown = await http.get(f"http://127.0.0.1:{port}/login/nope")
            assert unknown.status_code == 404 and "This link is not valid" in unknown.text
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "nope" not in log_path.read_text()  # paths with login tokens are never logged


def test_port_in_use_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path / "c.toml", {
            "matrix": {"homeserver": "http://127.0.0.1:9", "user_id": "@b:x", "password": "p"},
            "data": {"dir": str(tmp_path / "data")},
            "web": {"listen": f"127.0.0.1:{port}"},
        })  # fmt: skip
        result = cli("web", "--config", str(config), timeout=30)
    assert result.returncode == 1
    assert f"web.listen 127.0.0.1:{port} cannot be used" in result.stderr
    assert "Traceback" not in result.stderr
