"""End-to-end encryption as Element users meet it: encrypted DMs and rooms, a new device of the
user, an undecryptable message, a freshly created encrypted DM, restarts, cross-signing."""

from __future__ import annotations

import asyncio
import json
import re
import stat

import httpx
import pytest

from bot.community.outbox import Outbox
from bot.matrix.cross_signing import CrossSigningKeys, public_key, verify_json
from bot.store.database import Database
from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser
from tests.integration.test_bot_core import wait_for_invite_and_join

pytestmark = pytest.mark.synapse

FAKE_SSO = {
    "sso": {
        "providers": [
            {
                "id": "community",
                "name": "Community SSO",
                "issuer": "http://127.0.0.1:9/never-contacted",
                "client_id": "x",
                "client_secret": "y",
            }
        ]
    }
}


async def encrypted_dm(user: TestUser, bot_id: str) -> str:
    room = await user.create_room(invite=[bot_id], is_direct=True, encrypted=True)
    await user.wait_for_membership(room, bot_id, "join", timeout=15)
    return room


async def test_encrypted_dm_help_and_login_link_are_readable(synapse, tmp_path):
    async with running_bot(synapse, tmp_path, encryption=True, extra=FAKE_SSO) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("eva")) as eva:
            room = await encrypted_dm(eva, bot.user_id)
            helped = await eva.ask(room, "!help", sender=bot.user_id, timeout=20)
            assert eva.is_decrypted(helped["event_id"]) and "`!login`" in helped["content"]["body"]
            link = await eva.ask(room, "!login", sender=bot.user_id, timeout=20)
            assert eva.is_decrypted(link["event_id"])
            assert re.search(r"<http://127\.0\.0\.1:\d+/login/[\w-]{43,}>", link["content"]["body"])


async def test_a_new_device_of_the_user_can_read_the_bots_replies(synapse, tmp_path):
    account = synapse.fresh_account("nia")
    async with running_bot(synapse, tmp_path, encryption=True) as bot:
        async with await TestUser.login(synapse.base_url, account) as first:
            room = await encrypted_dm(first, bot.user_id)
            await first.ask(room, "!ping", sender=bot.user_id, timeout=20)
            # The same person logs in on a second device (a fresh device id and keys).
            second_login = httpx.post(
                f"{synapse.base_url}/_matrix/client/v3/login",
                json={
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": account.user_id},
                    "password": account.password,
                },
            ).json()
            second_account = type(account)(
                account.user_id,
                account.password,
                second_login["access_token"],
                second_login["device_id"],
            )
            async with await TestUser.login(synapse.base_url, second_account) as second:
                await asyncio.sleep(2)  # the bot learns of the new device through its sync
                ping = await first.send_text(room, "!ping")
                reply = await second.wait_for_message(
                    room, sender=bot.user_id, after_event_id=ping, timeout=20
                )
                assert second.is_decrypted(reply["event_id"]), (
                    "the new device cannot read the reply"
                )
                assert reply["content"]["body"].startswith("Pong!")


async def test_an_undecryptable_message_gets_help_and_the_bot_stays(synapse, tmp_path):
    async with running_bot(synapse, tmp_path, encryption=True) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("una")) as una:
            room = await encrypted_dm(una, bot.user_id)
            await una.ask(room, "!ping", sender=bot.user_id, timeout=20)
            # An encrypted event whose session the bot never got (as when a client does not share keys).
            raw = httpx.put(  # raw HTTP: nio would encrypt this again
                f"{synapse.base_url}/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/bogus1",
                headers={"Authorization": f"Bearer {una.client.access_token}"},
                json={
                    "algorithm": "m.megolm.v1.aes-sha2",
                    "sender_key": "A" * 43,
                    "device_id": una.client.device_id,
                    "session_id": "B" * 43,
                    "ciphertext": "AwgAEhAAAAAAAAAAAAAAAAAAAAAA",
                },
            ).json()
            help_ = await una.wait_for_event(
                room,
                lambda e: (
                    e["sender"] == bot.user_id
                    and "could not decrypt" in e["content"].get("body", "")
                ),
                timeout=40,
            )
            assert help_["type"] == "m.room.message" and "m.relates_to" in help_["content"]
            assert help_["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == raw["event_id"]
            # Still there, still answering.
            pong = await una.ask(room, "!ping", sender=bot.user_id, timeout=20)
            assert una.is_decrypted(pong["event_id"])
            members = await una.client.joined_members(room)
            assert bot.user_id in [m.user_id for m in members.members]


async def test_a_message_into_a_fresh_encrypted_dm_is_readable(synapse, tmp_path):
    async with running_bot(synapse, tmp_path, encryption=True) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("fia")) as fia:
            db = Database(bot.config.database.url)
            try:
                await Outbox(db).put("Welcome to the community!", recipient=fia.user_id)
            finally:
                await db.close()
            bot.app.courier.wake()
            dm = await wait_for_invite_and_join(fia, bot.user_id, timeout=20)
            message = await fia.wait_for_message(dm, sender=bot.user_id, timeout=30)
            assert fia.is_decrypted(message["event_id"]), (
                "the first message of a new DM was not encrypted"
            )
            assert message["content"]["body"] == "Welcome to the community!"


async def test_cross_signing_keys_are_made_once_and_sign_the_device(synapse, tmp_path):
    async with running_bot(synapse, tmp_path, encryption=True) as bot:
        path = tmp_path / "data" / "cross-signing-keys.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        keys = CrossSigningKeys.load(path)
        master, self_signing = public_key(keys.master), public_key(keys.self_signing)
        viewer = synapse.fresh_account("viewer")
        answer = httpx.post(
            f"{synapse.base_url}/_matrix/client/v3/keys/query",
            headers={"Authorization": f"Bearer {viewer.access_token}"},
            json={"device_keys": {bot.user_id: []}},
        ).json()
        assert list(answer["master_keys"][bot.user_id]["keys"].values()) == [master]
        ssk = answer["self_signing_keys"][bot.user_id]
        assert list(ssk["keys"].values()) == [self_signing] and verify_json(
            ssk, bot.user_id, master
        )
        device_id = json.loads((tmp_path / "data" / "matrix-credentials.json").read_text())[
            "device_id"
        ]
        device = answer["device_keys"][bot.user_id][device_id]
        assert verify_json(device, bot.user_id, self_signing), (
            "the bot's device is not cross-signed"
        )
        await bot.restart()
        assert public_key(CrossSigningKeys.load(path).master) == master  # reused, not regenerated


async def test_element_grade_client_sharing_only_with_cross_signed_devices(synapse, tmp_path):
    """matrix-js-sdk with its Rust crypto (Element's stack), set to share room keys only with
    devices their owners cross-signed: the bot's device qualifies, across restarts."""
    from tests.harness.js_client import JsClient

    account = synapse.fresh_account("jess")
    async with running_bot(synapse, tmp_path, encryption=True) as bot:
        async with JsClient() as jess:
            await jess.start(synapse.base_url, account, password=account.password)
            await jess.set_isolation("only_cross_signed")
            room = await jess.create_room(invite=[bot.user_id], is_direct=True, encrypted=True)
            await jess.wait_membership(room, bot.user_id, "join")
            info = await jess.device_info(bot.user_id)
            assert info["devices"] and all(d["signedByOwner"] for d in info["devices"]), info
            for round_ in range(2):
                ping = await jess.send_text(room, "!ping")
                reply = await jess.wait_message(
                    room, sender=bot.user_id, after_event_id=ping, timeout=20
                )
                assert reply["encrypted"] and not reply["decryptionFailure"], reply
                assert reply["content"]["body"].startswith("Pong!")
                assert reply["relatesTo"]["m.in_reply_to"]["event_id"] == ping
                # Element's shield: no "unsigned device" warning on the bot's messages.
                assert reply["encryptionInfo"]["shieldReason"] != "UNSIGNED_DEVICE", reply
                if round_ == 0:
                    await bot.restart()


async def test_ask_in_an_encrypted_room_streams_readable_edits(synapse, tmp_path):
    from tests.harness.linking import link_url
    from tests.harness.llm_stub import LlmStub

    async with LlmStub(api_key="sk", chunk_delay=0.35) as stub:  # slow: shown growing
        stub.reply = "Streaming through encryption works just fine, word by word by word."
        gpt = {"gpt": {"base_url": stub.base_url, "api_key": "sk", "model": "m", "max_retries": 0}}
        async with running_bot(synapse, tmp_path, encryption=True, extra=gpt) as bot:
            owner, friend = synapse.fresh_account("own"), synapse.fresh_account("fri")
            await link_url(bot.config.database.url, owner.user_id)
            async with (
                await TestUser.login(synapse.base_url, owner) as o,
                await TestUser.login(synapse.base_url, friend) as f,
            ):
                room = await o.create_room(
                    invite=[bot.user_id, friend.user_id], encrypted=True, name="enc"
                )
                await f.join(room)
                await o.wait_for_membership(room, bot.user_id, "join", timeout=15)
                question = await o.send_text(room, "!ask does this work?")
                placeholder = await o.wait_for_message(
                    room, sender=bot.user_id, after_event_id=question, timeout=20
                )
                assert o.is_decrypted(placeholder["event_id"])
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20
                while True:
                    edits = [
                        e
                        for e in o.events(room)
                        if e.get("content", {}).get("m.relates_to", {}).get("event_id")
                        == placeholder["event_id"]
                        and e["content"]["m.relates_to"].get("rel_type") == "m.replace"
                    ]
                    if edits and edits[-1]["content"]["m.new_content"]["body"] == stub.reply:
                        break
                    assert loop.time() < deadline, "the final edit never decrypted"
                    await asyncio.sleep(0.1)
                assert all(o.is_decrypted(e["event_id"]) for e in edits) and len(edits) >= 2


async def test_welcome_and_announcement_in_an_encrypted_room_are_readable(synapse, tmp_path):
    owner, newcomer = synapse.fresh_account("own"), synapse.fresh_account("new")
    extra = {"welcome": {"batch_window": "1s"}}
    async with running_bot(
        synapse, tmp_path, encryption=True, admins=[owner.user_id], extra=extra
    ) as bot:
        async with (
            await TestUser.login(synapse.base_url, owner) as o,
            await TestUser.login(synapse.base_url, newcomer) as n,
        ):
            room = await o.create_room(
                invite=[bot.user_id], name="Secret garden", encrypted=True,
                power_level_override={"users": {bot.user_id: 100}},
                # A community room: one people may ask to join ("knock"), not invite-only.
                initial_state=[{"type": "m.room.join_rules", "state_key": "",
                                "content": {"join_rule": "knock"}}],
            )  # fmt: skip
            await o.wait_for_membership(room, bot.user_id, "join", timeout=15)
            await o.ask(room, "!welcome on", sender=bot.user_id, timeout=20)
            await o.invite(room, newcomer.user_id)
            await n.join(room)
            greeting = await n.wait_for_event(
                room, lambda e: e["content"].get("body", "").startswith("Welcome "), timeout=30
            )
            assert n.is_decrypted(greeting["event_id"])
            assert greeting["content"]["m.mentions"] == {"user_ids": [newcomer.user_id]}
            command = await o.send_text(room, f"!announce {room} Tea at five.")
            posted = await n.wait_for_event(
                room, lambda e: e["content"].get("body") == "Tea at five.", timeout=30
            )
            assert n.is_decrypted(posted["event_id"]) and command
