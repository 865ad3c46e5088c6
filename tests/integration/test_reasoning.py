"""Reasoning models against real Synapse, the real bot and the LLM stub over HTTP: `<think>` text
and `reasoning_content` are never the answer nor history; a room can show them folded; while the
model only thinks, the placeholder says so."""

from __future__ import annotations

from typing import Any

import pytest

from bot.community.chat import PromptMessage
from bot.llm.openai_compatible import OpenAICompatibleModel
from tests.harness.bot import running_bot
from tests.harness.llm_stub import LlmStub
from tests.harness.matrix_user import TestUser
from tests.integration.test_bot_core import dm_with
from tests.integration.test_chat_matrix import edits_of, wait_final

THOUGHT = "secretly weighing <b>options</b> & more options before answering"
ANSWER = "The answer is 42."


@pytest.fixture
async def stub():
    async with LlmStub(api_key="sk-test", chunk_delay=0.1) as server:
        yield server


def gpt(stub: LlmStub, **overrides: Any) -> dict[str, Any]:
    return {"gpt": {
        "base_url": stub.base_url, "api_key": "sk-test", "model": "stub-model",
        "system_prompt": "You are the test assistant.", "max_retries": 0, "timeout": 10.0,
        "require_sso": False, **overrides,
    }}  # fmt: skip


@pytest.mark.parametrize("stream", [True, False])
async def test_the_model_adapter_separates_thinking_over_http(stub, stream):
    stub.chunk_delay = 0
    stub.reply = f"<think>{THOUGHT}</think>\n\n{ANSWER}"
    stub.reasoning = "provider-side reasoning"
    stub.chunk_chars = 4  # the tags arrive cut across chunks
    model = OpenAICompatibleModel(
        base_url=stub.base_url, api_key="sk-test", temperature=0, timeout=5, max_retries=0,
        stream=stream,
    )  # fmt: skip
    reasoning: list[str] = []
    completion = await model.complete(
        [PromptMessage("user", "q")], model="stub-model", on_text=lambda _: None,
        on_reasoning=reasoning.append,
    )  # fmt: skip
    assert completion.reasoning == "provider-side reasoning"
    assert completion.text == stub.reply  # the adapter passes `<think>` on; the domain splits
    assert (reasoning[-1] if reasoning else None) == ("provider-side reasoning" if stream else None)
    assert stub.answers[-1]["stream"] is stream


@pytest.mark.synapse
async def test_thinking_is_hidden_and_never_remembered(synapse, stub, tmp_path):
    stub.reasoning = " ".join(["pondering"] * 25)  # about 2.5 s of thinking: a placeholder
    stub.reply = f"<think>{THOUGHT}</think>\n\n{ANSWER}"
    stub.chunk_chars = 5
    async with running_bot(synapse, tmp_path, extra=gpt(stub)) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("ivy")) as ivy:
            room = await dm_with(ivy, bot.user_id)
            question = await ivy.send_text(room, "What is the answer?")
            placeholder = await ivy.wait_for_message(
                room, sender=bot.user_id, after_event_id=question, timeout=20
            )
            await wait_final(ivy, room, placeholder["event_id"], ANSWER)
            shown = [e["content"]["m.new_content"]["body"] for e in edits_of(ivy, room,
                     placeholder["event_id"])]  # fmt: skip
            assert "💭 Thinking…" in shown, shown
            everything = str([e["content"] for e in ivy.events(room) if e["sender"] == bot.user_id])
            assert "pondering" not in everything and "weighing" not in everything
            assert "<think>" not in everything and "think>" not in everything

            stub.reasoning = None
            stub.reply = None  # echo
            stub.chunk_delay = 0
            follow = await ivy.send_text(room, "And why?")
            answer = await ivy.wait_for_message(room, sender=bot.user_id, after_event_id=follow)
            await wait_final(ivy, room, answer["event_id"], "Echo: And why?")
            history = stub.last_messages()
            assert {"role": "assistant", "content": ANSWER} in history
            assert "weighing" not in str(history) and "pondering" not in str(history)


@pytest.mark.synapse
async def test_a_room_can_show_the_reasoning_folded(synapse, stub, tmp_path):
    admin = synapse.fresh_account("joy")
    stub.chunk_delay = 0
    config = gpt(stub, stream=False)  # and the answer in one piece, not streamed
    async with running_bot(synapse, tmp_path, extra=config, admins=[admin.user_id]) as bot:
        async with (
            await TestUser.login(synapse.base_url, admin) as joy,
            await TestUser.login(synapse.base_url, synapse.fresh_account("kim")) as kim,
        ):
            room = await joy.create_room(invite=[bot.user_id, kim.user_id], name="lab")
            await kim.join(room)
            await joy.wait_for_membership(room, bot.user_id, "join", timeout=15)
            done = await joy.ask(room, "!gpt reasoning show", sender=bot.user_id)
            assert "shown folded" in done["content"]["body"]
            shown = await joy.ask(room, "!gpt show", sender=bot.user_id)
            assert (
                "Room context: none (threads); reasoning shown folded."
                in (shown["content"]["body"])
            )
            stub.reply = f"<think>{THOUGHT}</think>{ANSWER}"
            question = await kim.send_text(room, "!ask what is it?")
            answer = await kim.wait_for_event(
                room, lambda e: e["sender"] == bot.user_id
                and e["content"].get("m.relates_to", {}).get("event_id") == question,
                timeout=20,
            )  # fmt: skip
            content = answer["content"]
            assert content["body"] == ANSWER
            html = content["formatted_body"]
            assert html.startswith("<details><summary>Reasoning</summary>secretly weighing ")
            assert "&lt;b&gt;options&lt;/b&gt; &amp; more" in html and "<b>" not in html
            assert html.endswith(f"</details>{ANSWER}")

            await joy.ask(room, "!gpt reasoning hide", sender=bot.user_id)
            again = await kim.send_text(room, "!ask and now?")
            hidden = await kim.wait_for_event(
                room, lambda e: e["sender"] == bot.user_id
                and e["content"].get("m.relates_to", {}).get("event_id") == again,
                timeout=20,
            )  # fmt: skip
            assert "Reasoning" not in hidden["content"]["formatted_body"]
