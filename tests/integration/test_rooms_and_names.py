"""Where the bot writes what, against a real Synapse: what a DM is (an invite-only room of the bot
and one member, never a room others can enter), what a community room is (what `--all` reaches:
never the admin room or a member's group chat), greetings that stay under the event size limit
whatever the names, and a data dir that only the bot's user can read."""

from __future__ import annotations

import asyncio
import json
import stat

import pytest
from nio import RoomPreset
from sqlalchemy import select

from bot.commands.members import PRIVATE_ONLY
from bot.store.database import Database
from bot.store.models import OutboxMessage
from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser
from tests.integration.test_bot_core import dm_with, wait_for_invite_and_join
from tests.integration.test_community_ops import body, group_room
from tests.integration.test_welcome_and_schedule import FAKE_SSO, welcomes

pytestmark = pytest.mark.synapse

RESTRICTED = [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]


async def test_a_small_room_others_can_enter_is_not_a_dm(synapse, tmp_path):
    async with running_bot(synapse, tmp_path, extra=FAKE_SSO) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("kim")) as kim:
            # Two members, but anyone may knock: a login link must not be posted here.
            room = await kim.create_room(invite=[bot.user_id], initial_state=RESTRICTED)
            await kim.wait_for_membership(room, bot.user_id, "join", timeout=15)
            asked = await kim.send_text(room, "!login")
            reply = await kim.wait_for_message(room, sender=bot.user_id, after_event_id=asked)
            assert body(reply) == "I sent you your login link in a direct message."
            # The link went to a real DM: an invite-only room of the two of them.
            dm = await wait_for_invite_and_join(kim, bot.user_id)
            assert dm != room
            link = await kim.wait_for_message(dm, sender=bot.user_id, timeout=15)
            assert "/login/" in body(link)
            assert not [e for e in kim.events(room) if "/login/" in e.get("content", {}).get(
                "body", "")]  # fmt: skip


async def test_all_reaches_community_rooms_only(synapse, tmp_path):
    admin, mod = synapse.fresh_account("adm"), synapse.fresh_account("mod")
    async with running_bot(synapse, tmp_path, admins=[admin.user_id]) as bot:
        async with (
            await TestUser.login(synapse.base_url, admin) as a,
            await TestUser.login(synapse.base_url, mod) as m,
        ):
            public = await group_room(a, bot.user_id, mod.user_id, name="public")
            await m.join(public)
            # A members' private group chat the bot was invited to: invite-only, three people.
            chat = await m.create_room(invite=[bot.user_id, admin.user_id], name="friends")
            await m.wait_for_membership(chat, bot.user_id, "join", timeout=15)
            await a.join(chat)
            a_dm = await dm_with(a, bot.user_id)
            await a.ask(a_dm, f"!role {mod.user_id} moderator", sender=bot.user_id)
            m_dm = await dm_with(m, bot.user_id)

            said = await m.send_text(m_dm, "!announce all Hello, community!")
            reply = await m.wait_for_message(m_dm, sender=bot.user_id, after_event_id=said)
            assert body(reply).startswith("Announced in public.")
            await asyncio.sleep(1)
            posted = [e for e in a.events(chat) if e.get("sender") == bot.user_id
                      and e.get("type") == "m.room.message"]  # fmt: skip
            assert posted == [], "an announcement reached a private group chat"
            refused = await m.ask(m_dm, f"!kick {admin.user_id} --room {chat}", sender=bot.user_id)
            assert "not one of the community rooms" in body(refused)
            here = await m.ask(chat, f"!kick {admin.user_id}", sender=bot.user_id)
            assert body(here).startswith("⚠️")


async def test_greetings_for_many_long_names_are_split_to_fit(synapse, tmp_path):
    owner = synapse.fresh_account("own")
    extra = {**FAKE_SSO, "welcome": {"batch_window": "2s"}}
    async with running_bot(synapse, tmp_path, admins=[owner.user_id], extra=extra) as bot:
        async with await TestUser.login(synapse.base_url, owner) as o:
            room = await group_room(o, bot.user_id, name="Lobby")
            await o.ask(room, "!welcome on", sender=bot.user_id)
            assert bot.app is not None and bot.app.welcomer is not None
            # A hundred newcomers at once with the longest names Synapse allows (the joins
            # themselves are not the subject: they are handed to the welcomer directly).
            newcomers = [f"@long{i:03d}:{synapse.server_name}" for i in range(100)]
            for i, mxid in enumerate(newcomers):
                name = ("\u202e" if i % 10 == 0 else "") + f"{i:03d}" + "N" * 252
                await bot.app.welcomer.on_join(room, mxid, name)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            mentioned: list[str] = []
            while sorted(mentioned) != newcomers:
                assert loop.time() < deadline, f"{len(mentioned)} of 100 greeted"
                await asyncio.sleep(0.5)
                greetings = welcomes(o, room, bot.user_id)
                mentioned = [m for e in greetings for m in e["content"]["m.mentions"]["user_ids"]]
            assert len(greetings) >= 2  # one message could not hold them all
            for event in greetings:
                assert len(json.dumps(event).encode()) < 65_536
                # Names that turn the text around stay inside their isolate.
                assert event["content"]["body"].count("\u2068") == event["content"]["body"].count(
                    "\u2069"
                )
            # Every one of them gets a login link by DM (kept as a request, no token stored).
            db = Database(bot.config.database.url)
            try:
                while True:
                    async with db.transaction() as session:
                        rows = list(await session.scalars(select(OutboxMessage)))
                    links = sorted(r.recipient for r in rows if r.kind == "login_link")
                    if links == newcomers or loop.time() > deadline:
                        break
                    await asyncio.sleep(0.5)
            finally:
                await db.close()
            assert links == newcomers
            assert not any("/login/" in r.body for r in rows)


async def test_the_data_dir_and_database_are_private(synapse, tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    async with running_bot(synapse, tmp_path) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("pat")) as pat:
            room = await dm_with(pat, bot.user_id)
            await pat.ask(room, "!ping", sender=bot.user_id)  # the database has been written
            assert stat.S_IMODE(data.stat().st_mode) == 0o700
            files = [p for p in data.glob("bot.db*")]
            assert {p.name for p in files} >= {"bot.db", "bot.db-wal", "bot.db-shm"}
            for path in files:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_a_public_room_never_counts_as_a_dm_for_member_details(synapse, tmp_path):
    admin = synapse.fresh_account("boss")
    async with running_bot(synapse, tmp_path, admins=[admin.user_id]) as bot:
        async with await TestUser.login(synapse.base_url, admin) as a:
            room = await a.create_room(invite=[bot.user_id], preset=RoomPreset.public_chat)
            await a.wait_for_membership(room, bot.user_id, "join", timeout=15)
            reply = await a.ask(room, "!users", sender=bot.user_id)
            assert body(reply) == "⚠️ " + PRIVATE_ONLY
