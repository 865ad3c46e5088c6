import asyncio
import itertools

from bot.community.context_window import StoredMessage, rows_to_read, select_recent
from bot.community.tokens import MESSAGE_OVERHEAD, estimate_tokens, message_tokens
from bot.matrix import chat_relay
from bot.matrix.chat_relay import EditPacer


def conversation(turns: int) -> list[StoredMessage]:
    """`turns` question/answer pairs, newest first, of growing length."""
    messages = []
    for i in range(turns):
        question = f"question {i} " + "word " * (i % 7)
        answer = f"answer {i} " + "longer words here " * (i % 5)
        messages += [
            StoredMessage(2 * i, "user", question, message_tokens(question, "m")),
            StoredMessage(2 * i + 1, "assistant", answer, message_tokens(answer, "m")),
        ]
    return list(reversed(messages))


def test_prompt_size_is_bounded_however_long_the_conversation():
    budget = 500
    sizes = {}
    for turns in (1, 50, 1000):
        window = select_recent(conversation(turns), budget)
        sizes[turns] = sum(m.tokens for m in window)
        assert sizes[turns] <= budget
    assert sizes[1000] <= sizes[50] + 60  # the same budget, whatever the length (± one turn)
    assert len(select_recent(conversation(1000), budget)) < 60


def test_window_is_the_most_recent_whole_turns_oldest_first():
    window = select_recent(conversation(1000), 300)
    assert window[0].role == "user"
    assert window[-1].id == 1999  # the newest answer
    ids = [m.id for m in window]
    assert ids == sorted(ids) and ids == list(range(ids[0], 2000))


def test_an_answer_whose_question_did_not_fit_is_dropped():
    newest_first = [
        StoredMessage(4, "assistant", "a", 10),
        StoredMessage(3, "user", "q", 10),
        StoredMessage(2, "assistant", "a", 10),
        StoredMessage(1, "user", "q", 100),
    ]
    assert [m.id for m in select_recent(newest_first, 35)] == [3, 4]
    assert select_recent(newest_first, 5) == []


def test_rows_to_read_covers_every_message_that_could_fit():
    assert rows_to_read(3000, MESSAGE_OVERHEAD) == 752


def test_estimate_errs_high():
    text = "The quick brown fox jumps over the lazy dog."  # 10 tokens in cl100k
    assert estimate_tokens(text) >= 10
    assert estimate_tokens("日本語のテキスト") >= 8  # multi-byte scripts count by bytes
    assert estimate_tokens("") == 0


class FakeSender:
    def __init__(self) -> None:
        self.edits: list[tuple[float, str]] = []

    async def edit(self, room_id, event_id, content):
        self.edits.append((asyncio.get_running_loop().time(), content["body"]))
        return "$edit"


async def test_edits_ramp_up_from_half_a_second_to_three(monkeypatch):
    monkeypatch.setattr(chat_relay, "FIRST_EDIT_INTERVAL_S", 0.05)
    monkeypatch.setattr(chat_relay, "MAX_EDIT_INTERVAL_S", 0.3)
    sender = FakeSender()
    pacer = EditPacer(sender, "!r:x", "$placeholder")  # type: ignore[arg-type]
    text = ""
    for i in range(150):  # a token every 10 ms for 1.5 s
        text += f"w{i} "
        pacer.update(text)
        await asyncio.sleep(0.01)
    await pacer.finish()
    times = [t for t, _ in sender.edits]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 4 <= len(sender.edits) <= 10, len(sender.edits)  # not one edit per token
    assert gaps[0] < gaps[-1] and max(gaps) < 0.4
    assert all(body.endswith(" …") for _, body in sender.edits)
