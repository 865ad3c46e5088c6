"""The protections against a real Synapse keeping its DEFAULT rate limits (rc_message 0.2/s,
burst 10) for the bot: members' limits are lifted through the admin API (a raid from another
server is not limited by ours), the bot's are not. A flood by several members is contained while
another member's `!ping` is still answered; a join wave closes the room and the cool-down
reopens it; mention spam and `@room` are judged by power level; a filtered link and a new
joiner's link are held back."""

from __future__ import annotations

import asyncio
import time

import pytest
from nio import RoomPreset

from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser
from tests.integration.test_rate_limits import lift_rate_limit

pytestmark = pytest.mark.synapse


def _lift(synapse, *user_ids: str) -> None:
    for user_id in user_ids:
        lift_rate_limit(synapse, user_id)


async def _community(owner: TestUser, bot_id: str, **extra) -> str:
    room = await owner.create_room(
        invite=[bot_id], name="Lobby", preset=RoomPreset.public_chat,
        power_level_override={"users": {bot_id: 100}, **extra},
    )  # fmt: skip
    await owner.wait_for_membership(room, bot_id, "join", timeout=30)
    return room


async def _members(synapse, prefix: str, count: int, room: str) -> list[TestUser]:
    accounts = [synapse.fresh_account(f"{prefix}{i}") for i in range(count)]
    _lift(synapse, *(a.user_id for a in accounts))
    users = [await TestUser.login(synapse.base_url, a) for a in accounts]
    for user in users:
        await user.join(room)
    return users


def _muted(owner: TestUser, room: str, user_id: str) -> bool:
    levels = [e for e in owner.events(room) if e.get("type") == "m.room.power_levels"]
    return bool(levels) and levels[-1]["content"].get("users", {}).get(user_id, 0) < 0


def _redacted(owner: TestUser, room: str) -> set[str]:
    return {e["redacts"] if "redacts" in e else e["content"].get("redacts")
            for e in owner.events(room) if e.get("type") == "m.room.redaction"}  # fmt: skip


async def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.2)


async def test_a_flood_by_several_members_is_contained_while_ping_is_answered(
    synapse_default_limits, tmp_path
):
    synapse = synapse_default_limits
    owner_account = synapse.fresh_account("owner")
    _lift(synapse, owner_account.user_id)
    protections = {"flood_max_messages": 5, "flood_window": "10s"}
    async with running_bot(synapse, tmp_path, admins=[owner_account.user_id],
                           extra={"protections": protections}) as bot:  # fmt: skip
        async with await TestUser.login(synapse.base_url, owner_account) as owner:
            room = await _community(owner, bot.user_id)
            flooders = await _members(synapse, "flood", 3, room)
            [pinger] = await _members(synapse, "calm", 1, room)
            try:

                async def flood(user: TestUser) -> None:
                    for i in range(20):
                        try:
                            await user.send_text(room, f"spam {i} from {user.user_id}")
                        except RuntimeError:  # muted: M_FORBIDDEN
                            return

                started = time.monotonic()
                flooding = [asyncio.create_task(flood(u)) for u in flooders]
                await asyncio.sleep(0.5)
                reply = await pinger.ask(room, "!ping", sender=bot.user_id, timeout=20)
                ping_took = time.monotonic() - started
                assert "Pong" in reply["content"]["body"]
                await asyncio.gather(*flooding)
                for user in flooders:
                    await _until(lambda u=user: _muted(owner, room, u.user_id), 30,
                                 f"{user.user_id} muted")  # fmt: skip
                assert not _muted(owner, room, pinger.user_id)
                warning = next(e for e in owner.events(room) if e["sender"] == bot.user_id
                               and "please stop" in e["content"].get("body", ""))  # fmt: skip
                assert "flood" in warning["content"]["body"]
                # The messages over the limit are redacted, paced, in the background.
                await _until(lambda: len(_redacted(owner, room)) >= 3, 60, "redactions begun")
                assert ping_took < 20
                # A moderator undoes a mute with the command the report names.
                name = flooders[0].user_id
                undo = await owner.ask(room, f"!unmute {name}", sender=bot.user_id, timeout=30)
                assert "unmuted" in undo["content"]["body"]
                await _until(lambda: not _muted(owner, room, name), 30, "unmuted")
            finally:
                for user in [*flooders, pinger]:
                    await user.close()


async def test_a_join_wave_closes_the_room_and_the_cooldown_reopens_it(
    synapse_default_limits, tmp_path
):
    synapse = synapse_default_limits
    owner_account = synapse.fresh_account("owner")
    _lift(synapse, owner_account.user_id)
    protections = {"join_wave": True, "join_wave_max_joins": 3, "join_wave_window": "60s",
                   "join_wave_cooldown": "10s"}  # fmt: skip
    async with running_bot(synapse, tmp_path, admins=[owner_account.user_id],
                           extra={"protections": protections}) as bot:  # fmt: skip
        async with await TestUser.login(synapse.base_url, owner_account) as owner:
            room = await _community(owner, bot.user_id)
            # Moderators manage the room's protections; bad input changes nothing.
            bad = await owner.ask(room, "!protect set flood max_messages lots", sender=bot.user_id)
            assert "flood max_messages: expected a whole number" in bad["content"]["body"]
            bad = await owner.ask(room, "!protect set flud window 5s", sender=bot.user_id)
            assert "there is no protection" in bad["content"]["body"]
            good = await owner.ask(room, "!protect set flood max_messages 3", sender=bot.user_id)
            assert "flood max_messages is now 3 in this room" in good["content"]["body"]
            shown = await owner.ask(room, "!protect show", sender=bot.user_id)
            assert "max_messages 3*" in shown["content"]["body"]
            assert "join_wave**: on" in shown["content"]["body"].replace("\\", "")
            raiders = await _members(synapse, "raid", 4, room)  # the 4th is one too many
            try:

                def rule() -> str | None:
                    rules = [e for e in owner.events(room) if e.get("type") == "m.room.join_rules"]
                    return rules[-1]["content"].get("join_rule") if rules else None

                await _until(lambda: rule() == "invite", 20, "room closed")
                closed_at = time.monotonic()
                late = TestUser.login(synapse.base_url, synapse.fresh_account("late"))
                async with await late as latecomer:
                    with pytest.raises(RuntimeError):
                        await latecomer.join(room)
                await _until(lambda: rule() == "public", 40, "room reopened")
                assert time.monotonic() - closed_at >= 5
            finally:
                for user in raiders:
                    await user.close()


async def test_mention_spam_and_room_mentions_by_power_level(synapse_default_limits, tmp_path):
    synapse = synapse_default_limits
    owner_account = synapse.fresh_account("owner")
    _lift(synapse, owner_account.user_id)
    protections = {"mentions_max_mentions": 3, "mentions_actions": ["mute"],
                   "exempt_power_level": 100}  # fmt: skip
    async with running_bot(synapse, tmp_path, admins=[owner_account.user_id],
                           extra={"protections": protections}) as bot:  # fmt: skip
        async with await TestUser.login(synapse.base_url, owner_account) as owner:
            room = await _community(owner, bot.user_id)
            spammer, shouter, herald = await _members(synapse, "m", 3, room)
            try:
                # The herald may notify the room (power 50), the shouter may not.
                levels = next(e for e in reversed(owner.events(room))
                              if e.get("type") == "m.room.power_levels")["content"]  # fmt: skip
                users = {**levels["users"], herald.user_id: 50}
                await owner.client.room_put_state(room, "m.room.power_levels",
                                                  {**levels, "users": users})  # fmt: skip
                names = [f"@someone{i}:localhost" for i in range(5)]
                spam = await spammer.send_text(room, "hey " + " ".join(names),
                                               extra_content={"m.mentions": {"user_ids": names}})  # fmt: skip
                loud = await shouter.send_text(room, "@room look at this",
                                               extra_content={"m.mentions": {"room": True}})  # fmt: skip
                fine = await herald.send_text(room, "@room meeting in 5",
                                              extra_content={"m.mentions": {"room": True}})  # fmt: skip
                await _until(lambda: {spam, loud} <= _redacted(owner, room), 60, "both redacted")
                await _until(lambda: _muted(owner, room, spammer.user_id)
                             and _muted(owner, room, shouter.user_id), 30, "both muted")  # fmt: skip
                assert fine not in _redacted(owner, room)
                assert not _muted(owner, room, herald.user_id)
            finally:
                for user in (spammer, shouter, herald):
                    await user.close()


async def test_filtered_link_and_new_joiner_link_are_held_back(synapse_default_limits, tmp_path):
    synapse = synapse_default_limits
    owner_account = synapse.fresh_account("owner")
    _lift(synapse, owner_account.user_id)
    protections = {"filters": True, "filters_domains": ["evil.example"],
                   "filters_words": ["buy crypto"], "filters_actions": ["redact"],
                   "new_joiners": True, "new_joiners_period": "10m"}  # fmt: skip
    async with running_bot(synapse, tmp_path, admins=[owner_account.user_id],
                           extra={"protections": protections}) as bot:  # fmt: skip
        async with await TestUser.login(synapse.base_url, owner_account) as owner:
            room = await _community(owner, bot.user_id)
            [newcomer] = await _members(synapse, "new", 1, room)
            try:
                await newcomer.wait_for_membership(room, newcomer.user_id, "join")
                await asyncio.sleep(1.0)  # the bot has seen the join
                word = await newcomer.send_text(room, "Want to BUY CRYPTO today?")
                link = await newcomer.send_text(room, "see https://good.example/page")
                words = await newcomer.send_text(room, "hello everyone, glad to be here")
                await _until(lambda: {word, link} <= _redacted(owner, room), 60, "held back")
                assert words not in _redacted(owner, room)
                # The new joiner is told why, by DM.
                dm = await _until_dm(newcomer, bot.user_id)
                assert "new members" in dm.lower()
            finally:
                await newcomer.close()


async def _until_dm(user: TestUser, bot_id: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for room_id in list(user.client.invited_rooms):
            await user.join(room_id)
        for event in user.events():
            body = event.get("content", {}).get("body", "")
            if event.get("sender") == bot_id and "removed your message" in body:
                return body
        await asyncio.sleep(0.3)
    raise AssertionError("no DM from the bot")
