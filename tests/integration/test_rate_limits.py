"""Under Synapse's default rc_message (0.2/s, burst 10) — what production bots meet — the bot waits
out every M_LIMIT_EXCEEDED and still answers everything, in order."""

from __future__ import annotations

import httpx
import pytest

from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser
from tests.integration.test_bot_core import answered, dm_with

pytestmark = pytest.mark.synapse

COMMANDS = 13  # burst of 10, then three more that must wait ~5 s each


def lift_rate_limit(synapse, user_id: str) -> None:
    """Only the test user is exempted (admin API); the bot keeps the default limits."""
    admin = synapse.fresh_account("admin", admin=True)
    response = httpx.post(
        f"{synapse.base_url}/_synapse/admin/v1/users/{user_id}/override_ratelimit",
        headers={"Authorization": f"Bearer {admin.access_token}"},
        json={"messages_per_second": 0, "burst_count": 0},
    )
    response.raise_for_status()


async def test_replies_survive_default_rate_limits_in_order(synapse_default_limits, tmp_path):
    synapse = synapse_default_limits
    account = synapse.fresh_account("gina")
    lift_rate_limit(synapse, account.user_id)
    async with running_bot(synapse, tmp_path) as bot:
        async with await TestUser.login(synapse.base_url, account) as gina:
            room = await dm_with(gina, bot.user_id)
            sent = [await gina.send_text(room, "!ping") for _ in range(COMMANDS)]
            await gina.wait_for_event(
                room,
                lambda e: (
                    e["sender"] == bot.user_id
                    and e["content"]
                    .get("m.relates_to", {})
                    .get("m.in_reply_to", {})
                    .get("event_id")
                    == sent[-1]
                ),
                timeout=60,
            )
            assert answered(gina, room, bot.user_id) == sent
            assert bot.app.sender.rate_limited_count >= 1
