"""The GPT relay as members use it: real Synapse, the real bot, and an OpenAI-compatible server
reached over HTTP through langchain-openai."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.harness.bot import RunningBot, bot_config, running_bot, write_config
from tests.harness.linking import link_url
from tests.harness.llm_stub import LlmStub
from tests.harness.matrix_user import TestUser
from tests.integration.test_bot_core import dm_with

pytestmark = pytest.mark.synapse

LONG_ANSWER = (
    "Here is **a bold answer** in several words so that the stream has enough pieces to edit"
)


@pytest.fixture
async def stub():
    async with LlmStub(api_key="sk-test", chunk_delay=0.05) as server:
        yield server


def gpt(stub: LlmStub, **overrides: Any) -> dict[str, Any]:
    return {"gpt": {
        "base_url": stub.base_url, "api_key": "sk-test", "model": "stub-model",
        "system_prompt": "You are the test assistant.", "max_retries": 0, "timeout": 5.0,
        **overrides,
    }}  # fmt: skip


def final_text(user: TestUser, room: str, event_id: str) -> str:
    """What a client shows for a message: its latest edit, or itself."""
    body = next(e for e in user.events(room) if e.get("event_id") == event_id)["content"]["body"]
    for e in user.events(room):
        relates = e.get("content", {}).get("m.relates_to", {})
        if relates.get("rel_type") == "m.replace" and relates.get("event_id") == event_id:
            body = e["content"]["m.new_content"]["body"]
    return body


def edits_of(user: TestUser, room: str, event_id: str) -> list[dict]:
    return [
        e for e in user.events(room)
        if e.get("content", {}).get("m.relates_to", {}).get("rel_type") == "m.replace"
        and e["content"]["m.relates_to"]["event_id"] == event_id
    ]  # fmt: skip


async def wait_final(
    user: TestUser, room: str, event_id: str, expected: str, timeout: float = 20
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while final_text(user, room, event_id) != expected:
        assert loop.time() < deadline, f"final text is {final_text(user, room, event_id)!r}"
        await asyncio.sleep(0.05)


async def linked_user(synapse, bot: RunningBot, name: str) -> TestUser:
    account = synapse.fresh_account(name)
    await link_url(bot.config.database.url, account.user_id)
    return await TestUser.login(synapse.base_url, account)


async def test_dm_chat_streams_by_edits_and_ends_with_the_whole_answer(synapse, stub, tmp_path):
    stub.reply = LONG_ANSWER
    stub.chunk_delay = 0.25  # slow enough (about 4 s) to be shown growing, not at once
    async with running_bot(synapse, tmp_path, extra=gpt(stub)) as bot:
        async with await linked_user(synapse, bot, "ann") as ann:
            room = await dm_with(ann, bot.user_id)
            question = await ann.send_text(room, "Tell me something")
            placeholder = await ann.wait_for_message(
                room, sender=bot.user_id, after_event_id=question
            )
            assert (
                placeholder["content"]["body"] == "…"
                and placeholder["content"]["msgtype"] == "m.notice"
            )
            await wait_final(ann, room, placeholder["event_id"], LONG_ANSWER)
            edits = edits_of(ann, room, placeholder["event_id"])
            assert len(edits) >= 2, "no intermediate edit: the answer did not stream"
            assert len(edits) < len(LONG_ANSWER.split()), (
                "an edit per token would flood the homeserver"
            )
            assert edits[0]["content"]["m.new_content"]["body"].endswith(" …")
            last = edits[-1]["content"]["m.new_content"]
            assert last["formatted_body"].startswith("Here is <strong>a bold answer</strong>")
            assert stub.requests[-1]["messages"] == [
                {"role": "system", "content": "You are the test assistant."},
                {"role": "user", "content": "Tell me something"},
            ]
            usage = await ann.ask(room, "!usage", sender=bot.user_id)
            assert usage["content"]["body"].startswith("Today you used ")
            assert "of your 20,000 tokens" in usage["content"]["body"]


async def test_room_mention_opens_a_thread_that_continues_and_threads_do_not_mix(
    synapse, stub, tmp_path
):
    async with running_bot(synapse, tmp_path, extra=gpt(stub)) as bot:
        async with (
            await linked_user(synapse, bot, "ben") as ben,
            await linked_user(synapse, bot, "cat") as cat,
        ):
            room = await ben.create_room(invite=[bot.user_id, cat.user_id], name="lounge")
            await cat.join(room)
            await ben.wait_for_membership(room, bot.user_id, "join", timeout=15)
            await ben.client.set_displayname("Ben")
            await ben.wait_for_event(  # profile changes reach rooms asynchronously
                room, lambda e: e["type"] == "m.room.member" and e["state_key"] == ben.user_id
                and e["content"].get("displayname") == "Ben",
            )  # fmt: skip
            localpart = bot.user_id[1:].split(":")[0]
            question = await ben.send_text(
                room, f"{localpart}: what is a homeserver?",
                extra_content={"m.mentions": {"user_ids": [bot.user_id]}},
            )  # fmt: skip
            answer = await ben.wait_for_message(room, sender=bot.user_id, after_event_id=question)
            relates = answer["content"]["m.relates_to"]
            assert relates["rel_type"] == "m.thread" and relates["event_id"] == question
            await wait_final(ben, room, answer["event_id"], "Echo: Ben: what is a homeserver?")

            # Cat asks separately with !ask: another thread, another conversation.
            other = await cat.send_text(room, "!ask is Matrix open?")
            other_answer = await cat.wait_for_message(
                room, sender=bot.user_id, after_event_id=other
            )
            assert other_answer["content"]["m.relates_to"]["event_id"] == other
            await wait_final(
                cat,
                room,
                other_answer["event_id"],
                f"Echo: {cat.user_id[1:].split(':')[0]}: is Matrix open?",
            )

            # A follow-up in Ben's thread needs no mention and carries the earlier turn.
            follow = await cat.send_text(
                room, "and who runs one?",
                extra_content={"m.relates_to": {"rel_type": "m.thread", "event_id": question}},
            )  # fmt: skip
            reply = await cat.wait_for_event(
                room, lambda e: e["sender"] == bot.user_id
                and e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == follow,
            )  # fmt: skip
            assert reply["content"]["m.relates_to"]["event_id"] == question
            sent = stub.requests[-1]["messages"]
            assert sent[1] == {"role": "user", "content": "Ben: what is a homeserver?"}
            assert sent[2] == {"role": "assistant", "content": "Echo: Ben: what is a homeserver?"}
            assert sent[3]["content"].endswith(": and who runs one?") and len(sent) == 4
            assert not any("is Matrix open" in m["content"] for m in sent)

            # Plain chatter outside the assistant's threads is left alone.
            before = len(stub.requests)
            await ben.send_text(room, "thanks all")
            await asyncio.sleep(1)
            assert len(stub.requests) == before


async def test_reset_quota_and_sso_requirement(synapse, stub, tmp_path):
    async with running_bot(synapse, tmp_path, extra=gpt(stub, daily_token_quota=20)) as bot:
        async with await linked_user(synapse, bot, "dee") as dee:
            room = await dm_with(dee, bot.user_id)
            first = await dee.send_text(room, "remember the number seven")
            placeholder = await dee.wait_for_message(room, sender=bot.user_id, after_event_id=first)
            await wait_final(dee, room, placeholder["event_id"], "Echo: remember the number seven")
            done = await dee.ask(room, "!reset", sender=bot.user_id)
            assert done["content"]["body"].startswith("Done: the assistant has forgotten")
            second = await dee.send_text(room, "what number?")
            placeholder = await dee.wait_for_message(
                room, sender=bot.user_id, after_event_id=second
            )
            await wait_final(dee, room, placeholder["event_id"], "Echo: what number?")
            assert [m["content"] for m in stub.requests[-1]["messages"]] == [
                "You are the test assistant.",
                "what number?",
            ]
            # Two turns used 24 tokens (the stub counts words), over the quota of 20:
            # the next is refused until midnight UTC.
            third = await dee.send_text(room, "and now?")
            refusal = await dee.wait_for_message(room, sender=bot.user_id, after_event_id=third)
            assert refusal["content"]["body"].startswith(
                "⚠️ You have used your 20 tokens for today."
            )
            assert "resets at 00:00 UTC, in" in refusal["content"]["body"]

        async with await TestUser.login(synapse.base_url, synapse.fresh_account("eli")) as eli:
            room = await dm_with(eli, bot.user_id)
            refusal = await eli.ask(room, "hello", sender=bot.user_id)
            assert refusal["content"]["body"] == (
                "⚠️ To chat with the assistant, link your community account first: send `!login`."
            )


async def test_room_settings_redaction_and_failures(synapse, stub, tmp_path):
    mod = synapse.fresh_account("mod")
    async with running_bot(synapse, tmp_path, admins=[mod.user_id], extra=gpt(stub)) as bot:
        await link_url(bot.config.database.url, mod.user_id)
        async with await TestUser.login(synapse.base_url, mod) as m:
            room = await dm_with(m, bot.user_id)
            changed = await m.ask(room, "!gpt model tiny-model", sender=bot.user_id)
            assert (
                changed["content"]["body"]
                == "The assistant's model in this room is now `tiny-model`."
            )
            await m.ask(room, "!gpt prompt Answer like a pirate.", sender=bot.user_id)
            shown = await m.ask(room, "!gpt show", sender=bot.user_id)
            assert "model `tiny-model` (this room)" in shown["content"]["body"]

            secret = await m.send_text(room, "my password is hunter2")
            answer = await m.wait_for_message(room, sender=bot.user_id, after_event_id=secret)
            await wait_final(m, room, answer["event_id"], "Echo: my password is hunter2")
            assert stub.requests[-1]["model"] == "tiny-model"
            assert stub.requests[-1]["messages"][0]["content"] == "Answer like a pirate."
            await m.client.room_redact(room, secret, reason="oops")
            await asyncio.sleep(1)  # the redaction reaches the bot with its next sync

            stub.fail_next("500")
            doomed = await m.send_text(room, "this one fails")
            failed = await m.wait_for_message(room, sender=bot.user_id, after_event_id=doomed)
            await wait_final(
                m, room, failed["event_id"],
                "⚠️ The assistant's service failed (HTTP 500). Please try again later.",
            )  # fmt: skip

            last = await m.send_text(room, "what did I tell you?")
            answer = await m.wait_for_message(room, sender=bot.user_id, after_event_id=last)
            await wait_final(m, room, answer["event_id"], "Echo: what did I tell you?")
            contents = [x["content"] for x in stub.requests[-1]["messages"]]
            assert not any("hunter2" in c for c in contents), (
                "the redacted message is still in the prompt"
            )
            assert not any("this one fails" in c for c in contents), (
                "a failed turn left history behind"
            )

            off = await m.ask(room, "!gpt off", sender=bot.user_id)
            assert off["content"]["body"] == "The assistant is now **off** in this room."
            refused = await m.ask(room, "anyone there?", sender=bot.user_id)
            assert refused["content"]["body"] == "⚠️ The assistant is switched off in this room."


async def test_without_streaming_one_message_carries_the_answer(synapse, stub, tmp_path):
    stub.reply = LONG_ANSWER
    async with running_bot(synapse, tmp_path, extra=gpt(stub, stream=False)) as bot:
        async with await linked_user(synapse, bot, "fay") as fay:
            room = await dm_with(fay, bot.user_id)
            answer = await fay.ask(room, "one shot please", sender=bot.user_id)
            assert answer["content"]["body"] == LONG_ANSWER
            await asyncio.sleep(0.5)
            assert edits_of(fay, room, answer["event_id"]) == []
            assert stub.requests[-1]["stream"] is False


async def test_an_answer_cut_off_by_a_restart_is_given_after_it(synapse, stub, tmp_path):
    account = synapse.fresh_account("bot")
    config_path = write_config(
        tmp_path / "config.toml", bot_config(synapse, account, tmp_path / "data", extra=gpt(stub))
    )
    bot = RunningBot(config_path, account)
    await bot.start()
    try:
        async with await linked_user(synapse, bot, "gus") as gus:
            room = await dm_with(gus, bot.user_id)
            stub.latency = 3.0
            question = await gus.send_text(room, "slow question")
            await gus.wait_for_message(
                room, sender=bot.user_id, after_event_id=question
            )  # placeholder
            bot.app._shutdown_grace_s = 0.2  # stop now, whatever runs
            await bot.stop()
            stub.latency = 0.0
            await bot.start()
            answer = await gus.wait_for_event(
                room, lambda e: e["sender"] == bot.user_id
                and e["content"].get("m.new_content", {}).get("body") == "Echo: slow question",
                timeout=20,
            )  # fmt: skip
            assert answer
    finally:
        await bot.stop()
