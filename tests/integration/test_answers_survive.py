"""Assistant answers as a member sees them when the bot restarts mid-answer, and when an answer is
too long for one Matrix event: real Synapse, the real bot (in-process, or as the `community-bot
run` process stopped with SIGTERM or killed with SIGKILL), the OpenAI-compatible stub streaming
word by word.

What must hold in the member's client: never half an answer left on screen, never a second
answer to one question, the placeholder that was streaming is the message that ends up holding
the answer, and every event of a long answer fits the homeserver's 65,536-byte limit (encrypted,
as an edit, too)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import update

from bot.config import load_config
from bot.matrix.chat_relay import INTERRUPTED
from bot.store.database import Database
from bot.store.models import HandledEvent
from tests.harness.bot import RunningBot, bot_config, write_config
from tests.harness.linking import link_url
from tests.harness.llm_stub import LlmStub
from tests.harness.matrix_user import TestUser
from tests.harness.synapse import REPO_ROOT, MatrixAccount, SynapseServer
from tests.integration.test_chat_matrix import edits_of, final_text, gpt, wait_final
from tests.integration.test_cli import CLI, wait_for_log

pytestmark = pytest.mark.synapse

MAX_EVENT_BYTES = 65_536
# 60 distinct words: streamed at SLOW_CHUNK_S a word, the answer takes ~12 s, so a stop or a
# kill lands in the middle of it; the resumed answer streams fast.
SLOW_ANSWER = "Once upon a time " + " ".join(f"word{i:02d}" for i in range(56)) + " end."
SLOW_CHUNK_S = 0.2
FAST_CHUNK_S = 0.02
# How long a graceful stop lets running answers go on before cutting them off (10 s by
# default: longer than these tests want to wait for the cut-off path).
SHORT_GRACE_S = 0.5


def long_answer() -> str:
    """~20,500 characters of markdown: numbered words (so their order can be checked), **bold**,
    and a fenced code block with blank lines that lies across the first cut (~8,000 chars)."""
    counter = iter(range(100_000))

    def words(n: int) -> str:
        return " ".join(f"w{next(counter):04d}" for _ in range(n))

    def paragraph(i: int) -> str:
        return f"Paragraph {i} says **bold{i:02d}** then {words(45)}."

    paragraphs = [paragraph(i) for i in range(23)]
    code = ["```python"]
    for j in range(20):
        code += [f"def step_{j}(value):", f"    # {words(10)}", f"    return value + {j}", ""]
    code.append("```")
    paragraphs.append("\n".join(code))
    paragraphs += [paragraph(i) for i in range(23, 60)]
    paragraphs.append("The end.")
    return "\n\n".join(paragraphs)


LONG_ANSWER = long_answer()


@pytest.fixture
async def stub():
    async with LlmStub(api_key="sk-test", chunk_delay=SLOW_CHUNK_S) as server:
        server.reply = SLOW_ANSWER
        yield server


# -- what the member sees ------------------------------------------------------------------------


def _is_edit(event: dict[str, Any]) -> bool:
    return event.get("content", {}).get("m.relates_to", {}).get("rel_type") == "m.replace"


def bot_events_after(user: TestUser, room: str, bot_id: str, after: str) -> list[dict[str, Any]]:
    """Every event the bot sent to `room` after the event `after` (edits included)."""
    events = user.events(room)
    start = next(i for i, e in enumerate(events) if e.get("event_id") == after) + 1
    return [e for e in events[start:] if e.get("sender") == bot_id]


def bot_messages_after(user: TestUser, room: str, bot_id: str, after: str) -> list[dict[str, Any]]:
    """The bot's messages after `after` that a client shows as messages (not edits)."""
    return [
        e
        for e in bot_events_after(user, room, bot_id, after)
        if e.get("type") == "m.room.message" and not _is_edit(e)
    ]


def shown_content(user: TestUser, room: str, event_id: str) -> dict[str, Any]:
    """The content a client shows for a message: its latest edit's new content, or its own."""
    content = next(e for e in user.events(room) if e.get("event_id") == event_id)["content"]
    for edit in edits_of(user, room, event_id):
        content = edit["content"]["m.new_content"]
    return content


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


async def wait_streaming(user: TestUser, room: str, placeholder: str) -> str:
    """Wait until the placeholder shows part of the answer, still growing; return that text."""
    await wait_until(
        lambda: (
            bool(edits_of(user, room, placeholder))
            and final_text(user, room, placeholder).endswith(" …")
        ),
        15,
        "the placeholder's first streamed edit",
    )
    partial = final_text(user, room, placeholder)
    assert SLOW_ANSWER.startswith(partial[: -len(" …")]) and partial[: -len(" …")] != SLOW_ANSWER
    return partial


def assert_one_answer_in_the_placeholder(
    user: TestUser, room: str, bot_id: str, question: str, placeholder: str
) -> None:
    """The question got one answer message, the placeholder, edited into the whole answer; its
    edits only ever showed the answer growing, the interrupted notice, or the whole answer."""
    messages = bot_messages_after(user, room, bot_id, question)
    assert [m["event_id"] for m in messages] == [placeholder], [
        (m["event_id"], m["content"].get("body", "")[:80]) for m in messages
    ]
    assert final_text(user, room, placeholder) == SLOW_ANSWER
    for edit in edits_of(user, room, placeholder):
        body = edit["content"]["m.new_content"]["body"]
        assert body in (SLOW_ANSWER, INTERRUPTED) or (
            body.endswith(" …") and SLOW_ANSWER.startswith(body[: -len(" …")])
        ), body


def assert_resumed_request_is_clean(stub: LlmStub, question_text: str) -> None:
    """The resumed turn asked the model the question once, with no half answer as history."""
    sent = stub.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"], sent
    assert sent[1]["content"].endswith(question_text), sent


# -- restarts --------------------------------------------------------------------------------------


def bot_config_file(
    synapse: SynapseServer, tmp_path: Path, stub: LlmStub, **options: Any
) -> tuple[MatrixAccount, dict[str, dict[str, Any]]]:
    account = synapse.fresh_account("bot")
    sections = bot_config(
        synapse, account, tmp_path / "data", extra=gpt(stub, timeout=60.0), **options
    )
    return account, sections


async def test_a_graceful_restart_mid_stream_edits_the_same_placeholder_into_the_answer(
    synapse, stub, tmp_path
):
    account, sections = bot_config_file(synapse, tmp_path, stub)
    bot = RunningBot(write_config(tmp_path / "config.toml", sections), account)
    await bot.start()
    try:
        member = synapse.fresh_account("ann")
        await link_url(bot.config.database.url, member.user_id)
        async with await TestUser.login(synapse.base_url, member) as ann:
            room = await ann.create_room(invite=[bot.user_id], is_direct=True)
            await ann.wait_for_membership(room, bot.user_id, "join", timeout=15)
            question = await ann.send_text(room, "Tell me a long story")
            placeholder = (
                await ann.wait_for_message(room, sender=bot.user_id, after_event_id=question)
            )["event_id"]
            await wait_streaming(ann, room, placeholder)

            assert bot.app is not None
            bot.app._shutdown_grace_s = SHORT_GRACE_S
            await bot.stop()
            # Not half an answer: the placeholder now says the answer was interrupted. (Here the
            # test's event loop lives on after the bot's run() returns; that the notice also goes
            # out before a real process ends is test_sigterm_mid_stream_...'s subject.)
            await wait_final(ann, room, placeholder, INTERRUPTED, timeout=10)
            await asyncio.sleep(1.0)  # nothing else arrives while the bot is down
            assert final_text(ann, room, placeholder) == INTERRUPTED
            assert [
                m["event_id"] for m in bot_messages_after(ann, room, bot.user_id, question)
            ] == [placeholder]

            stub.chunk_delay = FAST_CHUNK_S
            await bot.start()
            await wait_final(ann, room, placeholder, SLOW_ANSWER, timeout=20)
            await asyncio.sleep(1.5)  # a second answer, if any, would arrive meanwhile
            assert_one_answer_in_the_placeholder(ann, room, bot.user_id, question, placeholder)
            bodies = [
                e["content"]["m.new_content"]["body"] for e in edits_of(ann, room, placeholder)
            ]
            assert bodies.index(INTERRUPTED) < len(bodies) - 1  # the answer came after the notice
            assert_resumed_request_is_clean(stub, "Tell me a long story")
    finally:
        await bot.stop()


async def test_ask_in_a_room_cut_off_by_a_graceful_restart_is_finished_in_its_thread(
    synapse, stub, tmp_path
):
    account, sections = bot_config_file(synapse, tmp_path, stub)
    bot = RunningBot(write_config(tmp_path / "config.toml", sections), account)
    await bot.start()
    try:
        member = synapse.fresh_account("ben")
        await link_url(bot.config.database.url, member.user_id)
        async with (
            await TestUser.login(synapse.base_url, member) as ben,
            await TestUser.login(synapse.base_url, synapse.fresh_account("cat")) as cat,
        ):
            # Three members: a room of two is a private chat for the bot, answered like a DM.
            room = await ben.create_room(invite=[bot.user_id, cat.user_id], name="lounge")
            await cat.join(room)
            await ben.wait_for_membership(room, bot.user_id, "join", timeout=15)
            question = await ben.send_text(room, "!ask tell me a long story")
            first = await ben.wait_for_message(room, sender=bot.user_id, after_event_id=question)
            placeholder = first["event_id"]
            relates = first["content"].get("m.relates_to", {})
            assert relates.get("rel_type") == "m.thread", first["content"]
            assert relates["event_id"] == question  # the answer opens a thread on the question
            await wait_streaming(ben, room, placeholder)

            assert bot.app is not None
            bot.app._shutdown_grace_s = SHORT_GRACE_S
            await bot.stop()
            await wait_final(ben, room, placeholder, INTERRUPTED, timeout=10)
            await asyncio.sleep(1.0)
            assert final_text(ben, room, placeholder) == INTERRUPTED

            stub.chunk_delay = FAST_CHUNK_S
            await bot.start()
            await wait_final(ben, room, placeholder, SLOW_ANSWER, timeout=20)
            await asyncio.sleep(1.5)
            assert_one_answer_in_the_placeholder(ben, room, bot.user_id, question, placeholder)
            assert_resumed_request_is_clean(stub, "tell me a long story")

            # The claim is finished now: a command afterwards is answered, the story is not again.
            requests = len(stub.requests)
            pong = await ben.ask(room, "!ping", sender=bot.user_id)
            assert pong["content"]["body"].startswith("Pong!")
            await bot.restart()
            await ben.ask(room, "!ping", sender=bot.user_id)
            assert len(stub.requests) == requests
            assert final_text(ben, room, placeholder) == SLOW_ANSWER
    finally:
        await bot.stop()


class BotProcess:
    """`community-bot run` as an operator runs it, one process after another on one config."""

    def __init__(self, config: Path, logs: Path, user_id: str) -> None:
        self.config = config
        self.user_id = user_id
        self.logs = logs
        self.runs: list[tuple[subprocess.Popen, Path]] = []

    @property
    def process(self) -> subprocess.Popen:
        return self.runs[-1][0]

    @property
    def log_path(self) -> Path:
        return self.runs[-1][1]

    async def start(self) -> None:
        log_path = self.logs / f"run-{len(self.runs) + 1}.log"
        with log_path.open("w") as log_file:
            process = subprocess.Popen(
                [*CLI, "run", "--config", str(self.config)], stderr=log_file, cwd=REPO_ROOT
            )
        self.runs.append((process, log_path))
        await wait_for_log(log_path, "bot.ready", process)

    async def signal(self, sig: signal.Signals, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        return await asyncio.to_thread(self.process.wait, timeout)

    def records(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in self.log_path.read_text().splitlines()
            if line.startswith("{")
        ]

    def kill_all(self) -> None:
        for process, _ in self.runs:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@contextlib.asynccontextmanager
async def bot_process(
    synapse: SynapseServer, tmp_path: Path, stub: LlmStub
) -> AsyncIterator[BotProcess]:
    account, sections = bot_config_file(synapse, tmp_path, stub)
    sections["logging"] = {"level": "info", "format": "json"}
    bot = BotProcess(write_config(tmp_path / "config.toml", sections), tmp_path, account.user_id)
    try:
        await bot.start()
        yield bot
    finally:
        bot.kill_all()


async def question_streaming(
    synapse: SynapseServer, bot: BotProcess, name: str
) -> tuple[TestUser, str, str, str]:
    """A linked member asks in a DM; returns once the answer is streaming into the placeholder:
    (member, room, question, placeholder)."""
    member = synapse.fresh_account(name)
    await link_url(load_config(bot.config).database.url, member.user_id)
    user = await TestUser.login(synapse.base_url, member)
    try:
        bot_id = bot.user_id
        room = await user.create_room(invite=[bot_id], is_direct=True)
        await user.wait_for_membership(room, bot_id, "join", timeout=15)
        question = await user.send_text(room, "Tell me a long story")
        placeholder = (await user.wait_for_message(room, sender=bot_id, after_event_id=question))[
            "event_id"
        ]
        await wait_streaming(user, room, placeholder)
    except BaseException:
        await user.close()
        raise
    return user, room, question, placeholder


async def test_a_bot_killed_mid_stream_finishes_the_answer_in_the_same_placeholder(
    synapse, stub, tmp_path
):
    async with bot_process(synapse, tmp_path, stub) as bot:
        cid, room, question, placeholder = await question_streaming(synapse, bot, "cid")
        async with cid:
            assert await bot.signal(signal.SIGKILL, 10) == -signal.SIGKILL
            await asyncio.sleep(0.5)
            cut = final_text(cid, room, placeholder)
            assert cut.endswith(" …"), cut  # the kill did land mid-stream

            stub.chunk_delay = FAST_CHUNK_S
            await bot.start()
            await wait_final(cid, room, placeholder, SLOW_ANSWER, timeout=25)
            await asyncio.sleep(1.5)
            assert_one_answer_in_the_placeholder(cid, room, bot.user_id, question, placeholder)
            assert_resumed_request_is_clean(stub, "Tell me a long story")
            assert await bot.signal(signal.SIGTERM) == 0
        records = bot.records()
        resumed = [r["event_id"] for r in records if r["event"] == "matrix.resumed"]
        assert resumed == [question], bot.log_path.read_text()[-3000:]
        answered = [r["event_id"] for r in records if r["event"] == "chat.answered"]
        assert answered == [question]


async def test_sigterm_mid_stream_leaves_the_notice_then_the_answer(synapse, stub, tmp_path):
    """The stop an operator makes (systemd, docker stop): SIGTERM. The bot lets answers run on
    for 10 s, then must leave the notice in the placeholder before the process ends."""
    stub.chunk_delay = 0.3  # ~18 s: longer than the 10 s a stopping bot lets answers run on
    async with bot_process(synapse, tmp_path, stub) as bot:
        dan, room, question, placeholder = await question_streaming(synapse, bot, "dan")
        async with dan:
            assert await bot.signal(signal.SIGTERM) == 0
            await asyncio.sleep(1.0)  # what the member sees while the bot is down
            while_down = final_text(dan, room, placeholder)
            first_log = bot.log_path.read_text()

            stub.chunk_delay = FAST_CHUNK_S
            await bot.start()
            await wait_final(dan, room, placeholder, SLOW_ANSWER, timeout=25)
            await asyncio.sleep(1.5)
            assert_one_answer_in_the_placeholder(dan, room, bot.user_id, question, placeholder)
            assert_resumed_request_is_clean(stub, "Tell me a long story")
            assert await bot.signal(signal.SIGTERM) == 0
        # Checked last, so that a failure here still shows whether the restart mended it.
        assert while_down == INTERRUPTED, (
            f"while the bot was down after SIGTERM the placeholder showed {while_down!r}; "
            f"the stopped run's log ends with:\n{first_log[-2500:]}"
        )


async def test_a_claim_older_than_the_resume_window_only_gets_the_notice(synapse, stub, tmp_path):
    async with bot_process(synapse, tmp_path, stub) as bot:
        eve, room, question, placeholder = await question_streaming(synapse, bot, "eve")
        async with eve:
            assert await bot.signal(signal.SIGKILL, 10) == -signal.SIGKILL
            # The bot stays down longer than the resume window (one hour): its claim ages.
            db = Database(load_config(bot.config).database.url)
            try:
                async with db.transaction() as session:
                    await session.execute(
                        update(HandledEvent)
                        .where(HandledEvent.event_id == question)
                        .values(handled_at=datetime.now(UTC) - timedelta(hours=2))
                    )
            finally:
                await db.close()
            requests = len(stub.requests)

            await bot.start()
            await wait_final(eve, room, placeholder, INTERRUPTED, timeout=15)
            await asyncio.sleep(1.5)
            assert final_text(eve, room, placeholder) == INTERRUPTED
            assert len(stub.requests) == requests, "a question two hours old was answered"
            messages = bot_messages_after(eve, room, bot.user_id, question)
            assert [m["event_id"] for m in messages] == [placeholder]
            assert await bot.signal(signal.SIGTERM) == 0
        assert not [r for r in bot.records() if r["event"] == "matrix.resumed"]


# -- long answers ----------------------------------------------------------------------------------


async def raw_event(http: httpx.AsyncClient, base_url: str, room: str, event_id: str) -> bytes:
    """The event's JSON exactly as the homeserver serves it to the member (still encrypted in
    an encrypted room)."""
    response = await http.get(
        f"{base_url}/_matrix/client/v3/rooms/{quote(room, safe='')}/event/"
        f"{quote(event_id, safe='')}"
    )
    response.raise_for_status()
    return response.content


def assert_words_in_order(shown: str, answer: str) -> None:
    """Every word of `answer` appears in `shown`, in order (extra words, e.g. a code fence
    closed and reopened at a cut, are allowed)."""
    seen = iter(shown.split())
    for position, word in enumerate(answer.split()):
        if not any(candidate == word for candidate in seen):
            raise AssertionError(
                f"word {position} of the answer ({word!r}) is missing or out of order"
            )


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_a_long_answer_arrives_whole_in_messages_that_each_fit(
    synapse, stub, tmp_path, encrypted
):
    stub.reply = LONG_ANSWER
    stub.chunk_delay = 0.0
    stub.latency = 3.0  # slower than the bot waits before it shows a placeholder
    assert len(LONG_ANSWER) > 20_000
    account, sections = bot_config_file(synapse, tmp_path, stub, encryption=encrypted)
    sections["gpt"].update(max_tokens=10_000, daily_token_quota=100_000)
    bot = RunningBot(write_config(tmp_path / "config.toml", sections), account)
    await bot.start()
    try:
        member = synapse.fresh_account("kim")
        await link_url(bot.config.database.url, member.user_id)
        async with await TestUser.login(synapse.base_url, member) as kim:
            room = await kim.create_room(invite=[bot.user_id], is_direct=True, encrypted=encrypted)
            await kim.wait_for_membership(room, bot.user_id, "join", timeout=15)
            question = await kim.send_text(room, "Write me something long")
            first = await kim.wait_for_message(
                room, sender=bot.user_id, after_event_id=question, timeout=20
            )
            assert first["content"]["body"] == "…", first["content"]["body"][:200]
            placeholder = first["event_id"]

            def texts() -> list[str]:
                messages = bot_messages_after(kim, room, bot.user_id, question)
                return [final_text(kim, room, placeholder)] + [
                    m["content"]["body"] for m in messages[1:]
                ]

            await wait_until(
                lambda: texts()[-1].endswith("The end."), 30, "the end of the long answer"
            )
            await asyncio.sleep(1.5)  # anything more (an error notice, a repeat) arrives meanwhile

            messages = bot_messages_after(kim, room, bot.user_id, question)
            assert messages[0]["event_id"] == placeholder
            assert len(messages) >= 2, "a 20,000-character answer fits no single edit"
            shown = texts()
            for text in shown:
                assert "⚠️" not in text and not text.endswith(" …"), text[:300]
            assert shown[-1].endswith("The end.")
            assert_words_in_order("\n".join(shown), LONG_ANSWER)
            assert sum(len(text) for text in shown) < len(LONG_ANSWER) + 200 * len(shown), (
                "parts repeat text"
            )

            # Each part renders its own markdown: bold, and code as code on both sides of the cut.
            html = [shown_content(kim, room, m["event_id"])["formatted_body"] for m in messages]
            assert "<strong>bold00</strong>" in html[0]
            assert all("**" not in h and "```" not in h for h in html)
            code = "".join(
                block
                for h in html
                for block in re.findall(r"<pre><code[^>]*>.*?</code></pre>", h, re.S)
            )
            assert all(f"def step_{j}(value):" in code for j in range(20))
            assert sum("<pre><code" in h for h in html) >= 2, "the code block did not span a cut"

            # Every event of the answer, edits included, as the member's client receives it.
            events = bot_events_after(kim, room, bot.user_id, question)
            async with httpx.AsyncClient(
                headers={"Authorization": f"Bearer {member.access_token}"}, timeout=10
            ) as http:
                sizes = {
                    e["event_id"]: len(await raw_event(http, synapse.base_url, room, e["event_id"]))
                    for e in events
                }
            too_large = {
                event_id: size for event_id, size in sizes.items() if size >= MAX_EVENT_BYTES
            }
            assert not too_large, too_large
            assert max(sizes.values()) > 20_000, sizes  # parts are large, not needlessly tiny
            if encrypted:
                assert all(kim.is_decrypted(e["event_id"]) for e in events)
    finally:
        await bot.stop()
