"""Element creates encrypted DMs by default: the foundation must already answer in one, also after
a restart (same device, same keys). The full E2EE work (cross-signing, TOFU, key requests) builds
on this."""

import pytest

from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser

pytestmark = pytest.mark.synapse


async def test_encrypted_dm_is_answered_before_and_after_a_restart(synapse, tmp_path):
    async with running_bot(synapse, tmp_path, encryption=True) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("ivy")) as ivy:
            room = await ivy.create_room(invite=[bot.user_id], is_direct=True, encrypted=True)
            await ivy.wait_for_membership(room, bot.user_id, "join", timeout=15)
            for _ in range(2):
                ping = await ivy.send_text(room, "!ping")
                reply = await ivy.wait_for_message(
                    room, sender=bot.user_id, after_event_id=ping, timeout=20
                )
                assert ivy.is_decrypted(reply["event_id"]), "the reply was not encrypted"
                assert reply["content"]["body"].startswith("Pong!")
                assert reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == ping
                await bot.restart()
