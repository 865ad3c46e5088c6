"""A reasoning model's `<think>…</think>` split off its answer: the same result however the text is
cut into stream pieces, any text in linear time, and what the member is shown while it streams."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.community.reasoning import AnswerStream, ThinkSplitter, split_thinking

CPU_BUDGET_S = 0.2  # 64 KiB of the worst shapes; a quadratic parser needs many times more

PIECES = ["<think>", "</think>", "<", "</", "<th", "</thi", "think>", ">", "a", "b c", "\n", "😀"]
model_text = st.lists(st.sampled_from(PIECES), max_size=80).map("".join)
plain = st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=60)


def streamed(text: str, cuts: list[int]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    at = 0
    for cut in sorted(c % (len(text) + 1) for c in cuts):
        splitter.feed(text[at:cut])
        at = cut
    splitter.feed(text[at:])
    splitter.finish()
    return splitter.answer.rstrip(), splitter.reasoning


@settings(max_examples=400, deadline=timedelta(milliseconds=500))
@given(model_text, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_cut_into_pieces_splits_as_the_whole(text, cuts):
    assert streamed(text, cuts) == split_thinking(text)


@settings(max_examples=300, deadline=timedelta(milliseconds=500))
@given(plain, plain, st.lists(st.integers(min_value=0, max_value=500), max_size=8))
def test_thinking_then_answer(thought, answer, cuts):
    text = f"<think>{thought}</think>\n\n{answer}"
    assert streamed(text, cuts) == (answer.strip(), thought.strip())


@settings(max_examples=200, deadline=timedelta(milliseconds=500))
@given(plain, plain)
def test_a_closing_tag_without_an_opening_one_ends_the_thinking(thought, answer):
    # Templates that put `<think>` in the prompt: the model only writes the closing tag.
    assert split_thinking(f"{thought}</think>{answer}") == (answer.strip(), thought.strip())


@settings(max_examples=200, deadline=timedelta(milliseconds=500))
@given(plain)
def test_text_without_tags_is_all_answer(text):
    assert split_thinking(text) == (text.strip(), "")


def test_cases():
    assert split_thinking("<think>hmm</think>\n\nHello") == ("Hello", "hmm")
    assert split_thinking("<think>still thinking") == ("", "still thinking")
    assert split_thinking("a < b and c <thin") == ("a < b and c <thin", "")
    assert split_thinking("A<think>x</think>B") == ("AB", "x")
    assert split_thinking("<think>a</think>one<think>b</think>two") == ("onetwo", "ab")


@pytest.mark.parametrize(
    "pattern",
    ["<", "<think>", "</think>", "</thin", "<think>x</think", "<<think", "</think></think>"],
)
def test_hostile_shapes_in_linear_time(pattern):
    text = pattern * (64 * 1024 // len(pattern))
    started = time.thread_time()
    split_thinking(text)
    streamed(text, list(range(0, len(text), 7)))  # and cut into thousands of pieces
    assert time.thread_time() - started < CPU_BUDGET_S


def test_stream_shows_thinking_until_the_first_answer_text():
    shown: list[str] = []
    thinking: list[str] = []
    stream = AnswerStream(shown.append, thinking.append)
    raw = ""
    for piece in ["<thi", "nk>pondering ", "more</th", "ink>\n\nThe ", "answer"]:
        raw += piece
        stream.raw_text(raw)
    assert thinking and all(t.startswith("pondering") or t == "" for t in thinking)
    assert shown == ["The ", "The answer"]
    assert stream.reasoning == "pondering more"


def test_provider_reasoning_is_thinking_too():
    shown: list[str] = []
    thinking: list[str] = []
    stream = AnswerStream(shown.append, thinking.append)
    stream.provider_reasoning("step one")
    stream.provider_reasoning("step one, step two")
    stream.raw_text("Done.")
    stream.provider_reasoning("step one, step two, late")  # after the answer began: not shown
    assert thinking == ["step one", "step one, step two"]
    assert shown == ["Done."]
    assert stream.reasoning == "step one, step two, late"
