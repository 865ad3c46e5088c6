"""Active/standby on a real PostgreSQL, with the bot as two real `community-bot run` processes on
one config (one data dir: the device, its credentials and its encryption store), against a real
Synapse. A member streams numbered `!ping`s in an encrypted DM, and the answers are counted on
the homeserver:

- the leader SIGKILLed mid-stream: the standby takes over within 15 s, every ping is answered
  exactly once, in the encrypted DM (same device, same keys), and scheduled announcements are
  posted once, by whichever process leads at the time;
- the leader SIGSTOPped for longer than its lease (a split brain): the standby takes over; when
  the old leader is let go on (SIGCONT) it answers nothing and stops with `leader.lease_lost`
  (exit status 75); started again, it waits as the standby; a clean stop (SIGTERM) of the leader
  hands over at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.community.login_links import LoginLinks
from bot.leader import EXIT_LEASE_LOST
from bot.store.database import Database
from bot.store.models import Announcement, utcnow
from tests.harness.bot import bot_config, write_config
from tests.harness.matrix_user import TestUser
from tests.harness.synapse import REPO_ROOT, SynapseServer, free_port
from tests.integration.test_cli import CLI

pytestmark = pytest.mark.synapse

TAKEOVER_BUDGET_S = 15.0


class Node:
    """One `community-bot run` process; its own web port (the hosts of a real deployment each
    have theirs), everything else from the shared config file."""

    def __init__(self, name: str, config: Path, logs: Path) -> None:
        self.name = name
        self.config = config
        self.logs = logs
        self.port = free_port()
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = logs / f"{name}.log"

    def start(self) -> None:
        self.runs += 1
        self.log_path = self.logs / f"{self.name}-{self.runs}.log"
        env = {**os.environ, "CB_WEB_LISTEN": f"127.0.0.1:{self.port}",
               "CB_WEB_PUBLIC_URL": f"http://127.0.0.1:{self.port}"}  # fmt: skip
        with self.log_path.open("w") as log_file:
            self.process = subprocess.Popen(
                [*CLI, "run", "--config", str(self.config)], stderr=log_file, cwd=REPO_ROOT, env=env
            )

    def records(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in self.log_path.read_text().splitlines()
            if line.startswith("{")
        ]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["event"] == name]

    async def wait_for(self, event: str, timeout: float = 40) -> float:
        """Wait for a log line; returns time.monotonic() when it was seen (polled every 50 ms)."""
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if f'"event": "{event}"' in self.log_path.read_text():
                return time.monotonic()
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode} before {event}:\n"
                    + self.log_path.read_text()[-3000:]
                )
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name}: no {event} within {timeout} s:\n"
                           + self.log_path.read_text()[-3000:])  # fmt: skip

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait_exit(self, timeout: float = 30) -> int:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
async def pair(synapse: SynapseServer, postgres_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Two nodes on one PostgreSQL database and one config; the first one started leads."""
    account = synapse.fresh_account("bot")
    sections = bot_config(
        synapse, account, tmp_path / "data", encryption=True,
        extra={"database": {"url": postgres_url},
               "web": {"session_secret": "s" * 40},
            # A provider, so login pages render (it is never called here).
            "sso": {"resync_interval": "0s", "providers": [{
                "id": "github", "kind": "github", "client_id": "x", "client_secret": "y",
                "github_url": "http://127.0.0.1:9", "github_api_url": "http://127.0.0.1:9",
            }]},
               "logging": {"level": "info", "format": "json"}},
    )  # fmt: skip
    config = write_config(tmp_path / "config.toml", sections)
    nodes = (Node("a", config, tmp_path), Node("b", config, tmp_path))
    try:
        nodes[0].start()
        await nodes[0].wait_for("bot.ready")
        nodes[1].start()  # after the first: the database is migrated once
        await nodes[1].wait_for("leader.standby")
        yield account.user_id, postgres_url, nodes
    finally:
        for node in nodes:
            node.kill()


def replies_by_question(user: TestUser, room: str, bot_id: str) -> dict[str, list[str]]:
    """For each event the bot answered (as a reply), the ids of its answers."""
    replies: dict[str, list[str]] = {}
    for event in user.events(room):
        if event.get("sender") != bot_id or event.get("type") != "m.room.message":
            continue
        target = (event["content"].get("m.relates_to") or {}).get("m.in_reply_to", {})
        if "event_id" in target:
            replies.setdefault(target["event_id"], []).append(event["event_id"])
    return replies


async def stream_pings(user: TestUser, room: str, count: int, every_s: float) -> list[str]:
    sent = []
    for _ in range(count):
        sent.append(await user.send_text(room, "!ping"))
        await asyncio.sleep(every_s)
    return sent


async def all_answered(user: TestUser, room: str, bot_id: str, pings: list[str], timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = replies_by_question(user, room, bot_id)
        if all(p in answered for p in pings):
            return
        await asyncio.sleep(0.2)
    missing = [p for p in pings if p not in replies_by_question(user, room, bot_id)]
    raise AssertionError(f"{len(missing)} of {len(pings)} pings unanswered: {missing[:5]}")


async def plan_announcement(db_url: str, room: str, body: str, delay_s: float) -> None:
    db = Database(db_url)
    try:
        when = utcnow() + timedelta(seconds=delay_s)
        async with db.transaction() as session:
            session.add(Announcement(
                target=room, body=body, schedule=f"at {when:%Y-%m-%d %H:%M}",
                next_run_at=when, created_by="@admin:test",
            ))  # fmt: skip
    finally:
        await db.close()


def bodies(user: TestUser, room: str, bot_id: str) -> list[str]:
    return [
        e["content"].get("body", "")
        for e in user.events(room)
        if e.get("sender") == bot_id and e.get("type") == "m.room.message"
    ]


async def encrypted_dm(synapse: SynapseServer, bot_id: str, name: str) -> tuple[TestUser, str]:
    user = await TestUser.login(synapse.base_url, synapse.fresh_account(name))
    room = await user.create_room(invite=[bot_id], is_direct=True, encrypted=True)
    await user.wait_for_membership(room, bot_id, "join", timeout=20)
    first = await user.send_text(room, "!ping")
    await user.wait_for_message(room, sender=bot_id, after_event_id=first, timeout=20)
    return user, room


async def test_the_standby_takes_over_a_killed_leader_and_answers_every_command_once(synapse, pair):
    bot_id, db_url, (a, b) = pair
    # The standby serves the web app meanwhile: a login link opens on it.
    db = Database(db_url)
    try:
        token = await LoginLinks(db, timedelta(minutes=10)).issue("@someone:test")
    finally:
        await db.close()
    async with httpx.AsyncClient() as http:
        page = await http.get(f"http://127.0.0.1:{b.port}/login/{token}")
        ready_standby = await http.get(f"http://127.0.0.1:{b.port}/readyz")
        ready_leader = await http.get(f"http://127.0.0.1:{a.port}/readyz")
    assert page.status_code == 200 and "@someone:test" in page.text
    # Both are ready for web traffic (and healthy to Docker): the standby as the standby.
    assert ready_standby.status_code == 200, ready_standby.text
    assert ready_standby.json()["checks"] == {"standby": "ok", "database": "ok"}
    assert ready_leader.status_code == 200, ready_leader.text
    assert set(ready_leader.json()["checks"]) == {"matrix_login", "sync", "database"}

    ann, room = await encrypted_dm(synapse, bot_id, "ann")
    async with ann:
        await plan_announcement(db_url, room, "Announcement one", delay_s=0)
        deadline = time.monotonic() + 15
        while "Announcement one" not in bodies(ann, room, bot_id):  # posted by the leader
            assert time.monotonic() < deadline, "the first announcement never came"
            await asyncio.sleep(0.1)
        stream = asyncio.create_task(stream_pings(ann, room, 40, every_s=0.25))
        await asyncio.sleep(3)  # a dozen pings in, the leader dies
        a.signal(signal.SIGKILL)
        killed_at, killed_ms = time.monotonic(), time.time() * 1000
        assert await a.wait_exit(10) == -signal.SIGKILL
        await plan_announcement(db_url, room, "Announcement two", delay_s=1)
        acquired_at = await b.wait_for("leader.acquired", timeout=30)
        ready_at = await b.wait_for("bot.ready", timeout=30)
        pings = await stream
        await all_answered(ann, room, bot_id, pings, timeout=40)
        await asyncio.sleep(6)  # room for a second answer or announcement, if one were coming

        answered = replies_by_question(ann, room, bot_id)
        twice = {p: r for p, r in answered.items() if len(r) > 1}
        assert not twice, f"answered more than once: {twice}"
        pongs = [e["content"]["body"] for e in ann.events(room) if e.get("sender") == bot_id
                 and e["event_id"] in {r[0] for r in answered.values()}]  # fmt: skip
        assert all(body.startswith("Pong!") for body in pongs), pongs
        # The first answer after the kill that the dead leader cannot have sent (its last sends
        # land within milliseconds of the kill; the lease keeps its successor away for seconds).
        late = [
            e["origin_server_ts"] for e in ann.events(room)
            if e.get("sender") == bot_id and e["origin_server_ts"] > killed_ms + 1000
        ]  # fmt: skip
        first_answer_s = (min(late) - killed_ms) / 1000
        said = bodies(ann, room, bot_id)
        assert said.count("Announcement one") == 1 and said.count("Announcement two") == 1, said
        # Every message of the bot in the encrypted DM was encrypted and readable, before and
        # after the take-over (same device, its keys handed over with the data dir).
        bot_events = [e for e in ann.events(room) if e.get("sender") == bot_id
                      and e.get("type") == "m.room.message"]  # fmt: skip
        assert bot_events and all(ann.is_decrypted(e["event_id"]) for e in bot_events)

    takeover = {
        "lease_acquired_s": round(acquired_at - killed_at, 2),
        "ready_s": round(ready_at - killed_at, 2),
        "first_answer_s": round(first_answer_s, 2),
    }
    print(f"\ntake-over after SIGKILL: {takeover}")
    assert takeover["first_answer_s"] <= TAKEOVER_BUDGET_S, takeover
    assert [r["device_id"] for r in b.events("bot.ready")] == [
        r["device_id"] for r in a.events("bot.ready")
    ]
    # Each announcement by one process: the first by the leader, the second by its successor.
    assert len(a.events("announcement.posted")) == 1
    assert len(b.events("announcement.posted")) == 1
    handled = len(a.events("command.handled")) + len(b.events("command.handled"))
    assert handled >= len(pings) + 1  # a command taken up again by B is logged by both


async def test_a_leader_paused_past_its_lease_answers_nothing_and_steps_down(synapse, pair):
    bot_id, _db_url, (a, b) = pair
    ann, room = await encrypted_dm(synapse, bot_id, "bea")
    async with ann:
        a.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        pings = []
        # Pings while the leader is frozen: its long-poll sync receives them, its lease runs out.
        while "leader.acquired" not in b.log_path.read_text():
            pings.append(await ann.send_text(room, "!ping"))
            await asyncio.sleep(1)
            assert time.monotonic() - stopped_at < 30, "the standby never took over"
        await b.wait_for("bot.ready")
        await all_answered(ann, room, bot_id, pings, timeout=30)

        a.signal(signal.SIGCONT)  # the old leader wakes up, believing it leads, events pending
        for _ in range(3):
            pings.append(await ann.send_text(room, "!ping"))
        assert await a.wait_exit(15) == EXIT_LEASE_LOST
        await all_answered(ann, room, bot_id, pings, timeout=30)
        await asyncio.sleep(4)
        answered = replies_by_question(ann, room, bot_id)
        assert all(len(answered[p]) == 1 for p in pings), {p: answered[p] for p in pings}

        lost = a.events("leader.lease_lost")
        assert len(lost) == 1 and lost[0]["level"] == "error", a.log_path.read_text()[-2000:]
        after_stop = a.records()[a.records().index(lost[0]) :]
        assert [r["event"] for r in after_stop] == ["leader.lease_lost"]
        assert len(a.events("command.handled")) == 1  # only "!ping first", before the pause

        # Its supervisor starts it again: now it is the standby.
        a.start()
        await a.wait_for("leader.standby")
        # A clean stop of the leader hands over at once, without waiting out the lease.
        b.signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert await b.wait_exit(30) == 0
        assert b.events("leader.released")
        ready_at = await a.wait_for("bot.ready", timeout=20)
        print(f"\nhand-over after SIGTERM: {round(ready_at - stopping, 2)} s to ready")
        ping = await ann.send_text(room, "!ping")
        reply = await ann.wait_for_message(room, sender=bot_id, after_event_id=ping, timeout=20)
        assert ann.is_decrypted(reply["event_id"])
