"""The real-parts harness works: Synapse, scripted Matrix users and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.harness.matrix_user import TestUser
from tests.harness.postgres import PostgresServer
from tests.harness.synapse import SynapseServer

pytestmark = pytest.mark.synapse


def test_start_failure_reports_the_log(tmp_path: Path) -> None:
    server = SynapseServer(tmp_path / "bad", extra_config={"database": {"name": "nosuchdb"}})
    with pytest.raises(RuntimeError, match="Synapse exited") as caught:
        server.start(timeout=20)
    assert "nosuchdb" in str(caught.value) or "database" in str(caught.value).lower()
    assert not server.running


def test_register_two_users(synapse: SynapseServer) -> None:
    alice = synapse.fresh_account("alice")
    bob = synapse.fresh_account("bob", admin=True)
    assert alice.user_id != bob.user_id
    assert alice.user_id.startswith("@alice-") and alice.user_id.endswith(":localhost")
    for account in (alice, bob):
        who = httpx.get(
            f"{synapse.base_url}/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {account.access_token}"},
        )
        assert who.json()["user_id"] == account.user_id
        assert who.json()["device_id"] == account.device_id


async def test_two_users_talk_through_a_room(synapse: SynapseServer) -> None:
    a_account, b_account = synapse.fresh_account("a"), synapse.fresh_account("b")
    async with (
        await TestUser.login(synapse.base_url, a_account) as a,
        await TestUser.login(synapse.base_url, b_account) as b,
    ):
        room_id = await a.create_room(name="harness", invite=[b.user_id])
        await b.wait_for_membership(room_id, b.user_id, "invite")
        assert await b.join(room_id) == room_id
        await a.wait_for_membership(room_id, b.user_id, "join")

        event_id = await a.send_text(room_id, "hello b", formatted_body="<b>hello</b> b")
        got = await b.wait_for_message(room_id, sender=a.user_id, after_event_id=None)
        assert got["event_id"] == event_id
        assert got["content"]["body"] == "hello b"
        assert got["content"]["formatted_body"] == "<b>hello</b> b"

        # after_event_id: only what arrived after that event counts.
        second = await a.send_text(room_id, "second")
        got = await b.wait_for_message(room_id, sender=a.user_id, after_event_id=event_id)
        assert got["event_id"] == second

        # ask(): the answer (an m.notice, like the bot's) is the next message after the question.
        async def answer() -> None:
            await b.wait_for_event(
                room_id, lambda e: e["content"]["body"] == "pong?", after_event_id=second
            )
            await b.send_text(room_id, "pong", msgtype="m.notice")

        answering = asyncio.create_task(answer())
        reply = await a.ask(room_id, "pong?", sender=b.user_id)
        await answering
        assert reply["content"] == {"msgtype": "m.notice", "body": "pong"}

        with pytest.raises(TimeoutError, match=r"m\.room\.message from @nobody:localhost"):
            await a.wait_for_message(room_id, sender="@nobody:localhost", timeout=0.3)


async def test_encrypted_room_round_trip(synapse: SynapseServer) -> None:
    a_account, b_account = synapse.fresh_account("ea"), synapse.fresh_account("eb")
    async with (
        await TestUser.login(synapse.base_url, a_account) as a,
        await TestUser.login(synapse.base_url, b_account) as b,
    ):
        if a.client.olm is None:
            pytest.skip("matrix-nio without encryption support")
        room_id = await a.create_room(invite=[b.user_id], encrypted=True)
        await b.wait_for_membership(room_id, b.user_id, "invite")
        await b.join(room_id)
        await a.wait_for_membership(room_id, b.user_id, "join")
        event_id = await a.send_text(room_id, "secret")
        got = await b.wait_for_message(room_id, sender=a.user_id)
        assert got["event_id"] == event_id
        assert got["content"]["body"] == "secret"
        assert b.is_decrypted(event_id)


async def test_own_server_starts_fast_restarts_and_keeps_users(tmp_path: Path) -> None:
    server = SynapseServer(tmp_path / "hs")
    began = time.monotonic()
    server.start()
    try:
        elapsed = time.monotonic() - began
        assert elapsed < 5, f"Synapse took {elapsed:.1f} s to become healthy"
        assert httpx.get(f"{server.base_url}/health").status_code == 200
        assert httpx.get(f"{server.base_url}/_matrix/client/versions").json()["versions"]
        assert server.log_path.exists()

        account = server.fresh_account("survivor")
        user = await TestUser.login(server.base_url, account)
        try:
            room_id = await user.create_room(name="before restart")
            began = time.monotonic()
            server.restart()
            assert time.monotonic() - began < 10
            assert httpx.get(f"{server.base_url}/health").status_code == 200

            # The password still works after the restart (and the old token: the sends below).
            login = httpx.post(
                f"{server.base_url}/_matrix/client/v3/login",
                json={
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": account.user_id},
                    "password": account.password,
                },
            )
            assert login.status_code == 200, login.text
            # The background sync recovers: a message sent after the restart arrives.
            event_id = await user.send_text(room_id, "after restart")
            got = await user.wait_for_message(room_id, sender=user.user_id, timeout=15)
            assert got["event_id"] == event_id
        finally:
            await user.close()
    finally:
        server.stop()
    assert not server.running


@pytest.mark.postgres
async def test_postgres_database_accepts_connections(postgres: PostgresServer) -> None:
    url = postgres.fresh_database_url()
    other = postgres.fresh_database_url()
    assert url != other
    assert url.startswith(f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/")
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
            database = (await connection.execute(text("SELECT current_database()"))).scalar_one()
            assert url.endswith("/" + database)
    finally:
        await engine.dispose()


@pytest.mark.postgres
def test_postgres_url_fixture_is_fresh(postgres_url: str, postgres: PostgresServer) -> None:
    assert postgres_url.startswith("postgresql+asyncpg://")


def test_artifacts_dir(artifacts_dir: Path) -> None:
    assert artifacts_dir.is_dir()
    assert artifacts_dir.name == "test_artifacts_dir"
    assert artifacts_dir.parent.name == "test-artifacts"
