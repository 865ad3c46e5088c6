"""One hostile member against the real bot on a real Synapse, with the store on SQLite and on
PostgreSQL. Each class of pathological message is sent while another member's `!ping` must keep
coming back within a second; the event loop is never kept from running for more than 100 ms; and
afterwards the bot answers everyone, the hostile member included."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nio import RoomPreset

from tests.harness.bot import running_bot
from tests.harness.linking import link_url
from tests.harness.llm_stub import LlmStub
from tests.harness.loop_lag import LoopLag
from tests.harness.matrix_user import TestUser
from tests.integration.test_bot_core import dm_with
from tests.integration.test_chat_matrix import wait_final

pytestmark = pytest.mark.synapse

PING_WITHIN_S = 1.0
LOOP_LAG_S = 0.1
EVENT_BYTES = 56_000  # of the 65,536 Synapse allows, room left for the envelope
PILL = '<a href="https://matrix.to/#/@mallory:localhost">'
ROOM_ONLY = {"filter bait", "think tags"}  # what the room's protections read, not commands


def many(pattern: str, share: float = 1.0) -> str:
    """`pattern` repeated to fill `share` of an event, as Synapse counts it (JSON-escaped)."""
    escaped = len(json.dumps(pattern, ensure_ascii=False)[1:-1].encode())
    return pattern * int(EVENT_BYTES * share // escaped)


def payloads(bot_id: str, own: str) -> list[tuple[str, dict[str, Any]]]:
    """(what, content) of the messages the hostile member sends, each near Synapse's 64 KiB.
    `own` is an earlier message of theirs (Synapse refuses edits and threads of unknown events;
    ids with NUL in them come only over federation, see test_store's NUL tests)."""
    text = lambda body, **more: {"msgtype": "m.text", "body": body, **more}  # noqa: E731
    html = lambda body, formatted: text(  # noqa: E731
        body, format="org.matrix.custom.html", formatted_body=formatted
    )
    return [
        ("unknown command of brackets", text("!" + many("["))),
        ("unknown command of image brackets", text("!" + many("!["))),
        ("unclosed pill", html("!kick Bob", "!kick " + PILL + many("a"))),
        ("many open anchors", html("!kick Bob", "!kick " + many("<a<a "))),
        ("quotes", text('!help "a ' + many('"a '))),
        ("usage echo", text("!whoami " + many("x"))),
        ("options", text("!help " + many("--all "))),
        ("mention flood", html(bot_id + " " + many("@room ", 0.4), many(PILL, 0.5))),
        ("nul in body", text("!ping\x00" + "\x00" * 1000)),
        ("bidi", text("!\u202e" + many("gnip"))),
        ("edit with nul", text("* x", **{
            "m.new_content": {"msgtype": "m.text", "body": "x\x00" * 1000},
            "m.relates_to": {"rel_type": "m.replace", "event_id": own},
        })),
        ("edit of bot-like shape", text("* x", **{
            "m.new_content": {"msgtype": "m.text", "body": 42},
            "m.relates_to": {"rel_type": "m.replace", "event_id": own},
        })),
        ("reply to nul", text("hello", **{
            "m.relates_to": {"m.in_reply_to": {"event_id": "$\x00nul" + "a" * 400}},
        })),
        ("thread with nul", text("!ping\x00", **{
            "m.relates_to": {"rel_type": "m.thread", "event_id": own},
        })),
        # The parsers and filters that came with protections, summaries, media and ban lists.
        ("summary arguments", text("!summary since " + many("1 day "))),
        ("protect set", text("!protect set filters words " + many("w "))),
        ("lists subscribe", text("!lists subscribe " + many("#a:b "))),
        ("image prompt", text("!image " + many("draw "))),
        ("gpt context", text("!gpt context " + many("9"))),
        ("filter bait", html(many("spam.example/x ", 0.4), many('<a href="http://a.spam.example/">', 0.4))),
        ("think tags", text(many("<think></think"))),
    ]  # fmt: skip


@pytest.fixture
async def stub():
    async with LlmStub(api_key="sk-test", chunk_delay=0) as server:
        yield server


async def timed_ping(user: TestUser, room: str, bot_id: str) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    pong = await user.ask(room, "!ping", sender=bot_id, timeout=10)
    assert pong["content"]["body"].startswith("Pong!")
    return loop.time() - started


async def test_pathological_messages_never_stall_or_silence_the_bot(
    synapse, stub, tmp_path, store_url
):
    extra = {
        "database": {"url": store_url},
        "gpt": {"base_url": stub.base_url, "api_key": "sk-test", "model": "m", "max_retries": 0},
        # Every filter reads every message; the flood limit is out of the way (the hostile
        # member must stay able to send, to be answered afterwards).
        "protections": {
            "filters": True, "filters_words": ["forbiddenword"],
            "filters_domains": ["evil.example"], "filters_patterns": ["*casino*bonus*"],
            "flood_max_messages": 1000,
        },
    }  # fmt: skip
    async with running_bot(synapse, tmp_path, extra=extra) as bot:
        mallory_account, alice_account = synapse.fresh_account("mal"), synapse.fresh_account("ali")
        for account in (mallory_account, alice_account):
            await link_url(bot.config.database.url, account.user_id)
        async with (
            await TestUser.login(synapse.base_url, mallory_account) as mallory,
            await TestUser.login(synapse.base_url, alice_account) as alice,
        ):
            await mallory.client.set_displayname("M" * 256)  # the longest Synapse allows
            room = await mallory.create_room(
                invite=[bot.user_id, alice.user_id], name="commons", preset=RoomPreset.public_chat
            )
            await alice.join(room)
            await mallory.wait_for_membership(room, bot.user_id, "join", timeout=15)
            mallory_dm = await dm_with(mallory, bot.user_id)
            alice_dm = await dm_with(alice, bot.user_id)
            baseline = await timed_ping(alice, alice_dm, bot.user_id)

            pings: dict[str, float] = {}
            lags: dict[str, float] = {}
            async with LoopLag() as lag:
                own = {r: await mallory.send_text(r, "hello there") for r in (room, mallory_dm)}
                for target in (room, mallory_dm):
                    for what, content in payloads(bot.user_id, own[target]):
                        if target == mallory_dm and what in ROOM_ONLY:
                            continue  # plain text in a DM is a question for the assistant
                        response = await mallory.client.room_send(target, "m.room.message", content)
                        assert hasattr(response, "event_id"), (what, response)
                        where = f"{what} in {'room' if target == room else 'DM'}"
                        pings[where] = await timed_ping(alice, alice_dm, bot.user_id)
                        lags[where] = lag.take()
            slow = {what: round(s, 2) for what, s in pings.items() if s > PING_WITHIN_S}
            assert not slow, f"alice waited more than {PING_WITHIN_S} s (baseline {baseline:.2f})"
            print("loop lag by payload:", {w: round(s, 3) for w, s in lags.items()})
            print("ping by payload:", {w: round(s, 3) for w, s in pings.items()})
            stalls = {what: round(s, 3) for what, s in lags.items() if s >= LOOP_LAG_S}
            assert not stalls, f"the event loop stalled (seconds): {stalls}\n" + "\n".join(
                lag.stacks
            )

            # Afterwards everyone is answered, the hostile member too, in rooms and DMs.
            for user, where in ((mallory, mallory_dm), (mallory, room), (alice, room)):
                await timed_ping(user, where, bot.user_id)
            # The member whose name is 256 characters long chats, and the turn is counted.
            answer = await mallory.ask(mallory_dm, "what is two and two?", sender=bot.user_id)
            await wait_final(mallory, mallory_dm, answer["event_id"], "Echo: what is two and two?")
            asked = await mallory.send_text(mallory_dm, "!usage")
            usage = await mallory.wait_for_event(
                mallory_dm,
                lambda e: (
                    e["sender"] == bot.user_id and e["content"]["body"].startswith("Today you used")
                ),
                after_event_id=asked,
            )
            assert not usage["content"]["body"].startswith("Today you used 0 ")
            assert bot.app is not None
            quarantined = await bot.app.ledger.quarantined()
            assert quarantined == [], [(q.event_id, q.error) for q in quarantined]
