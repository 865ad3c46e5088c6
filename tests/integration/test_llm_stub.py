"""The OpenAI-compatible stub (tests/harness/llm_stub.py) against the client stack the bot uses:
``langchain_openai.ChatOpenAI`` over the ``openai`` SDK.

What langchain-openai does on each failure (observed here, openai 3.x / langchain-openai 1.x):

* 429 / 500: the openai SDK retries (``max_retries``; with ``retry-after: 0`` it backs off about
  0.5 s); once retries are spent langchain raises ``OpenAIRateLimitError`` (an
  ``openai.RateLimitError``) / ``OpenAIAPIError`` (an ``openai.InternalServerError``).
* no answer within ``timeout``: ``OpenAITimeoutError``, an ``openai.APITimeoutError`` (itself an
  ``openai.APIConnectionError``), also retried while retries remain.
* connection dropped in the middle of an SSE stream: ``astream`` first yields the chunks that did
  arrive, then raises ``OpenAIConnectionError`` (an ``openai.APIConnectionError``); it never ends
  quietly, and it is not retried (the SDK only retries before the body is handed over).
  Dropped in the middle of a non-streamed body: retried like a connection error.
* wrong key: ``OpenAIAuthenticationError`` (an ``openai.AuthenticationError``), not retried.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from langchain_core.exceptions import (
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelRateLimitError,
    ModelTimeoutError,
)
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from tests.harness.llm_stub import LlmStub, count_tokens, prompt_tokens, split_reply
from tests.harness.synapse import REPO_ROOT

API_KEY = "sk-stub-test-0123456789"
MODEL = "stub-model"
SYSTEM = "You are a helpful community assistant."
QUESTION = "What is the capital of France?"
REPLY = f"Echo: {QUESTION}"


@pytest.fixture
async def stub() -> AsyncIterator[LlmStub]:
    async with LlmStub(api_key=API_KEY, models=[MODEL, "stub-model-large"]) as server:
        yield server


def chat(stub: LlmStub, **overrides: object) -> ChatOpenAI:
    """ChatOpenAI configured like the bot's relay."""
    options: dict[str, object] = {
        "model": MODEL,
        "base_url": stub.base_url,
        "api_key": API_KEY,
        "streaming": True,
        "stream_usage": True,
        "max_retries": 1,
        "timeout": 5,
    }
    options.update(overrides)
    return ChatOpenAI(**options)  # type: ignore[arg-type]


def prompt() -> list[BaseMessage]:
    return [SystemMessage(SYSTEM), HumanMessage(QUESTION)]


def expected_usage(reply: str = REPLY) -> tuple[int, int]:
    sent = [{"content": SYSTEM}, {"content": QUESTION}]
    return prompt_tokens(sent), count_tokens(reply)


async def collect(llm: ChatOpenAI) -> list[AIMessageChunk]:
    return [chunk async for chunk in llm.astream(prompt())]


# -- normal answers -------------------------------------------------------------------------------


async def test_ainvoke_without_streaming_returns_echo_and_usage(stub: LlmStub) -> None:
    answer = await chat(stub, streaming=False).ainvoke(prompt())
    assert answer.content == REPLY
    p, c = expected_usage()
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == p == 12
    assert answer.usage_metadata["output_tokens"] == c == 7
    assert answer.usage_metadata["total_tokens"] == p + c
    assert answer.response_metadata["finish_reason"] == "stop"
    assert answer.response_metadata["model_name"] == MODEL
    assert stub.last_request()["stream"] is False
    assert stub.counts["ok"] == 1 and stub.counts["stream"] == 0


async def test_ainvoke_as_the_bot_configures_it_streams_and_aggregates(stub: LlmStub) -> None:
    answer = await chat(stub).ainvoke(prompt())
    assert answer.content == REPLY
    assert answer.usage_metadata is not None
    assert (answer.usage_metadata["input_tokens"], answer.usage_metadata["output_tokens"]) == (
        expected_usage()
    )
    request = stub.last_request()
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}


async def test_astream_yields_word_chunks_and_usage_last(stub: LlmStub) -> None:
    chunks = await collect(chat(stub))
    texts = [chunk.content for chunk in chunks if chunk.content]
    assert texts == split_reply(REPLY) == ["Echo: ", "What ", "is ", "the ", "capital ", "of ",
                                           "France?"]  # fmt: skip
    assert "".join(texts) == REPLY
    # The server's last chunk (empty choices) carries the usage; langchain-core then appends an
    # empty closing chunk (chunk_position="last") without usage.
    with_usage = [i for i, chunk in enumerate(chunks) if chunk.usage_metadata]
    assert with_usage == [len(chunks) - 2]
    usage = chunks[-2].usage_metadata
    assert usage is not None
    assert (usage["input_tokens"], usage["output_tokens"]) == expected_usage()
    assert chunks[-1].chunk_position == "last" and not chunks[-1].content
    finish = [c.response_metadata.get("finish_reason") for c in chunks]
    assert finish.count("stop") == 1
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.content == REPLY
    assert total.usage_metadata is not None and total.usage_metadata["total_tokens"] == sum(
        expected_usage()
    )


async def test_records_exactly_the_messages_sent(stub: LlmStub) -> None:
    await chat(stub, temperature=0.3).ainvoke(prompt())
    assert stub.last_messages() == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
    ]
    request = stub.last_request()
    assert request["model"] == MODEL and request["temperature"] == 0.3
    assert len(stub.requests) == 1 and stub.counts["requests"] == 1
    stub.clear()
    assert stub.requests == [] and not stub.counts


async def test_reply_override_and_usage_off(stub: LlmStub) -> None:
    stub.reply = "A fixed answer."
    assert (await chat(stub).ainvoke(prompt())).content == "A fixed answer."
    stub.reply = lambda body: f"{len(body['messages'])} messages to {body['model']}"
    assert (await chat(stub).ainvoke(prompt())).content == f"2 messages to {MODEL}"

    stub.reply = None
    stub.report_usage = False
    chunks = await collect(chat(stub))
    assert "".join(str(c.content) for c in chunks) == REPLY
    assert all(chunk.usage_metadata is None for chunk in chunks)
    assert stub.last_request()["stream_options"] == {"include_usage": True}  # asked, not given
    plain = await chat(stub, streaming=False).ainvoke(prompt())
    assert plain.content == REPLY and plain.usage_metadata is None


async def test_models_endpoint_and_auth(stub: LlmStub) -> None:
    client = openai.AsyncOpenAI(base_url=stub.base_url, api_key=API_KEY, max_retries=0)
    models = [model.id async for model in client.models.list()]
    assert models == [MODEL, "stub-model-large"]
    assert (await client.models.retrieve(MODEL)).id == MODEL
    intruder = openai.AsyncOpenAI(base_url=stub.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await intruder.models.list()
    await client.close()
    await intruder.close()


# -- injected failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "openai_error", "model_error"),
    [
        ("429", openai.RateLimitError, ModelRateLimitError),
        ("500", openai.InternalServerError, ModelAPIError),
    ],
)
async def test_http_errors_are_retried(
    stub: LlmStub, kind: str, openai_error: type[Exception], model_error: type[Exception]
) -> None:
    stub.fail_next(kind)
    started = time.monotonic()
    answer = await chat(stub, max_retries=1).ainvoke(prompt())
    assert answer.content == REPLY
    assert len(stub.requests) == 2
    assert stub.counts[kind] == 1 and stub.counts["ok"] == 1
    assert time.monotonic() - started < 2.0  # the SDK's first back-off is ~0.5 s

    stub.clear()
    stub.fail_next(kind)
    with pytest.raises(openai_error) as caught:
        await chat(stub, max_retries=0).ainvoke(prompt())
    assert isinstance(caught.value, model_error)
    assert len(stub.requests) == 1 and stub.pending_failures == []
    if kind == "429":
        assert caught.value.response.headers["retry-after"] == "0"  # type: ignore[attr-defined]
        body = caught.value.body  # type: ignore[attr-defined]
        assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded"


async def test_failures_are_consumed_in_order(stub: LlmStub) -> None:
    stub.fail_next("500")
    stub.fail_next("429", times=2)
    stub.retry_after = 0.05  # a positive retry-after is honoured by the SDK (0 is not)
    assert stub.pending_failures == ["500", "429", "429"]
    started = time.monotonic()
    answer = await chat(stub, max_retries=3, streaming=False).ainvoke(prompt())
    assert answer.content == REPLY
    assert len(stub.requests) == 4 and stub.pending_failures == []
    assert [stub.counts[k] for k in ("500", "429", "ok")] == [1, 2, 1]
    assert time.monotonic() - started < 1.5  # ~0.5 s back-off after the 500, 0.05 s after 429s
    with pytest.raises(ValueError, match="unknown failure kind"):
        stub.fail_next("418")


@pytest.mark.parametrize("streaming", [True, False])
async def test_timeout_raises_api_timeout_error(stub: LlmStub, streaming: bool) -> None:
    stub.fail_next("timeout")
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError) as caught:
        await chat(stub, streaming=streaming, timeout=0.5, max_retries=0).ainvoke(prompt())
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2.0
    assert isinstance(caught.value, ModelTimeoutError)
    assert stub.counts["timeout"] == 1
    # The hanging request does not hold the server up.
    assert (await chat(stub).ainvoke(prompt())).content == REPLY


async def test_broken_stream_raises_after_the_partial_chunks(stub: LlmStub) -> None:
    stub.fail_next("broken_stream")
    received: list[AIMessageChunk] = []
    with pytest.raises(openai.APIConnectionError) as caught:
        async for chunk in chat(stub, max_retries=3).astream(prompt()):
            received.append(chunk)
    assert isinstance(caught.value, ModelConnectionError)
    assert not isinstance(caught.value, openai.APITimeoutError)
    assert "".join(str(c.content) for c in received) == "Echo: What "
    assert all(chunk.usage_metadata is None for chunk in received)
    assert len(stub.requests) == 1  # a stream that already started is not retried
    assert stub.counts["broken_stream"] == 1 and stub.counts["ok"] == 0
    # ainvoke with streaming=True raises the same way.
    stub.fail_next("broken_stream")
    with pytest.raises(openai.APIConnectionError):
        await chat(stub, max_retries=3).ainvoke(prompt())
    assert (await chat(stub).ainvoke(prompt())).content == REPLY


async def test_broken_plain_body_is_a_retried_connection_error(stub: LlmStub) -> None:
    stub.fail_next("broken_stream")
    with pytest.raises(openai.APIConnectionError):
        await chat(stub, streaming=False, max_retries=0).ainvoke(prompt())
    stub.clear()
    stub.fail_next("broken_stream")
    answer = await chat(stub, streaming=False, max_retries=1).ainvoke(prompt())
    assert answer.content == REPLY and len(stub.requests) == 2


async def test_wrong_api_key_is_an_authentication_error(stub: LlmStub) -> None:
    stub.fail_next("500")
    with pytest.raises(openai.AuthenticationError) as caught:
        await chat(stub, api_key="sk-wrong", max_retries=2).ainvoke(prompt())
    assert isinstance(caught.value, ModelAuthenticationError)
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    assert stub.counts["unauthorized"] == 1 and len(stub.requests) == 1  # not retried
    assert stub.pending_failures == ["500"]  # unauthenticated requests consume no failure


async def test_no_key_needed_when_api_key_unset() -> None:
    async with LlmStub() as open_stub:
        answer = await chat(open_stub, api_key="anything").ainvoke(prompt())
        assert answer.content == REPLY


# -- concurrency and standalone ------------------------------------------------------------------


async def test_fifty_concurrent_requests_do_not_serialise(stub: LlmStub) -> None:
    llm = chat(stub)
    stub.chunk_delay = 0  # time the concurrency, not the word-by-word pacing

    async def fifty() -> float:
        started = time.monotonic()
        answers = await asyncio.gather(
            *(llm.ainvoke([HumanMessage(f"question {i}")]) for i in range(50))
        )
        assert [a.content for a in answers] == [f"Echo: question {i}" for i in range(50)]
        return time.monotonic() - started

    # Warm-up without latency: opens the client's 50 pooled connections; what it takes is the
    # client stack's own cost (langchain + openai on a shared event loop), not the stub's.
    overhead = await fifty()
    stub.clear()
    stub.latency = 1.0
    elapsed = await fifty()
    assert stub.peak_inflight == 50
    print(f"50 concurrent streamed ainvoke: {overhead:.2f} s at latency 0, {elapsed:.2f} s at 1.0")
    # Serialised they would take 50 s; overlapping, about 1 s plus the client's own work, which
    # on 2 busy cores varies. The 1.5x target is measured by `make bench`, not asserted here.
    assert elapsed < 5, f"50 concurrent requests took {elapsed:.2f} s"


def test_standalone_main_prints_ready_and_serves() -> None:
    command = [sys.executable, "-m", "tests.harness.llm_stub", "--port", "0", "--model", "demo"]
    with subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line.startswith("ready http://127.0.0.1:"), line
            base_url = line.removeprefix("ready ")
            assert base_url.endswith("/v1")
            models = httpx.get(f"{base_url}/models", timeout=5).json()
            assert [m["id"] for m in models["data"]] == ["demo"]
            reply = httpx.post(
                f"{base_url}/chat/completions",
                json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
                timeout=5,
            ).json()
            assert reply["choices"][0]["message"]["content"] == "Echo: hi"
            assert reply["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
