"""A project-owned OpenAI-compatible server for tests and the local demo (no internet here).

It speaks the subset of OpenAI's API the bot uses through langchain-openai: ``POST
/v1/chat/completions`` (plain and streamed as server-sent events, with ``stream_options:
{"include_usage": true}``) and ``GET /v1/models``. Shapes follow OpenAI's Chat Completions API as
parsed by the installed ``openai`` SDK and ``langchain_openai.ChatOpenAI``.

Usage::

    async with LlmStub(api_key="sk-test") as stub:
        llm = ChatOpenAI(model="stub-model", base_url=stub.base_url, api_key="sk-test")
        stub.reply = "fixed answer"           # or a callable(request_json) -> str
        stub.fail_next("429")                  # next request answers 429 (then normal again)
        ...
        stub.requests[-1]["messages"]          # what the client sent

Standalone (the demo): ``python -m tests.harness.llm_stub --port 8010`` prints ``ready <base_url>``.

By default the reply is ``"Echo: <last user message>"``. Token counts are deterministic: one token
per whitespace-separated word (see :func:`count_tokens`); ``prompt_tokens`` is the sum over all
request messages, ``completion_tokens`` the count of the reply.

Like OpenAI, a request's ``max_completion_tokens`` (or ``max_tokens``) cuts the reply at that
many tokens, with ``finish_reason: "length"``.

Failure kinds for :meth:`LlmStub.fail_next` (one queued failure is consumed per chat request that
passed authentication):

* ``"429"`` — HTTP 429 with OpenAI's error JSON (``rate_limit_error``) and ``retry-after``
  (attribute ``retry_after``, default 0: the openai SDK then falls back to its own back-off,
  about 0.5 s for the first retry);
* ``"500"`` — HTTP 500 with OpenAI's error JSON (``server_error``);
* ``"timeout"`` — waits ``hang_seconds`` (default one hour) before answering normally, without
  blocking other requests; :meth:`LlmStub.stop` wakes it up;
* ``"broken_stream"`` — for ``stream: true`` sends the role chunk and two content chunks, then
  drops the connection (chunked body left unterminated, no ``[DONE]``); for a non-streamed
  request sends the headers and half the JSON body, then drops the connection.

Media (llm_stub_media.py): ``POST /v1/audio/transcriptions`` (multipart), ``/v1/audio/speech``
(a real WAV), ``/v1/images/generations`` (``b64_json`` of a real PNG); recorded in
``transcriptions``, ``speech_requests``, ``image_requests``, and image parts of chat requests in
``images_seen``. The default answer to a message with images begins "I see an image of WxH.".

Reasoning models: a reply may hold ``<think>…</think>`` like any text (set ``chunk_chars`` to
stream it in pieces of that many characters, so tags arrive cut across chunks); ``reasoning``
(a string or callable(request JSON) -> str) is sent as the provider field ``reasoning_content``
(DeepSeek, vLLM): in streamed deltas before the content (``content: null``), and in the
non-streamed message. ``answers`` records what was served: ``{"content", "reasoning_content",
"stream"}`` per answer; the reasoning counts as completion tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from tests.harness.llm_stub_media import MediaEndpoints, describe_images

FAILURE_KINDS = ("429", "500", "timeout", "broken_stream")

Reply = str | Callable[[dict[str, Any]], str] | None


def count_tokens(text: str) -> int:
    """The stub's deterministic token count: whitespace-separated words."""
    return len(text.split())


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return " ".join(parts)
    return str(content)


def prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """Sum of :func:`count_tokens` over the contents of all messages."""
    return sum(count_tokens(message_text(m.get("content"))) for m in messages)


def echo_reply(body: dict[str, Any]) -> str:
    """The default reply: ``"Echo: <content of the last user message>"``."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return f"Echo: {message_text(message.get('content'))}"
    return "Echo: "


def split_reply(text: str) -> list[str]:
    """Word-by-word pieces (each keeps its trailing whitespace); they join back to ``text``."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class LlmStub(MediaEndpoints):
    """An OpenAI-compatible chat completions server on 127.0.0.1.

    All attributes below may be changed between requests (they are read per request)."""

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        api_key: str | None = None,
        models: Sequence[str] = ("stub-model",),
        reply: Reply = None,
        report_usage: bool = True,
        latency: float = 0.0,
        chunk_delay: float = 0.01,
        hang_seconds: float = 3600.0,
        retry_after: float = 0,
    ) -> None:
        self.host = host
        self.port: int | None = port  # the bound port once started
        #: When set, requests must carry ``Authorization: Bearer <api_key>`` (401 otherwise).
        self.api_key = api_key
        #: Listed by ``GET /v1/models``; any model name is accepted by chat completions.
        self.models = list(models)
        #: ``None``: :func:`echo_reply`; a string; or a callable(request JSON) -> str.
        self.reply: Reply = reply
        #: When False no ``usage`` is sent at all (neither in replies nor in streams).
        self.report_usage = report_usage
        #: Seconds before the first byte of chat completion responses (injected failures
        #: included; 400/401 answers are immediate).
        self.latency = latency
        #: Seconds between streamed chunks.
        self.chunk_delay = chunk_delay
        #: How long a ``"timeout"`` failure waits before answering.
        self.hang_seconds = hang_seconds
        #: Value of the ``retry-after`` header on 429 answers.
        self.retry_after = retry_after
        #: Parsed JSON bodies of every ``POST /v1/chat/completions``, in arrival order.
        self.requests: list[dict[str, Any]] = []
        #: Counters: ``requests`` (chat requests), ``stream`` (of which streamed), ``ok``
        #: (answered normally), ``unauthorized``, ``bad_request``, ``models`` (model list
        #: requests), and one per failure kind served (``"429"``, ``"500"``, ``"timeout"``,
        #: ``"broken_stream"``).
        self.counts: collections.Counter[str] = collections.Counter()
        self._failures: collections.deque[str] = collections.deque()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._inflight = 0
        #: The most chat requests ever answered at the same time (see :attr:`inflight`).
        self.peak_inflight = 0
        #: Sent as ``reasoning_content`` beside the reply (``None``/``""``: none).
        self.reasoning: Reply = None
        #: Stream the reply in pieces of this many characters (None: word by word).
        self.chunk_chars: int | None = None
        #: What each answered request was served (see the module docstring).
        self.answers: list[dict[str, Any]] = []
        # Transcriptions, speech, image generation and image parts (llm_stub_media.py).
        self._init_media()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the server root)."""
        if self.port is None:
            raise RuntimeError("LlmStub is not started: the port is chosen by start()")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what OpenAI clients take as ``base_url``."""
        return f"{self.url}/v1"

    async def start(self) -> LlmStub:
        if self._runner is not None:
            return self
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._list_models)
        self._add_media_routes(app)
        app.router.add_get("/v1/models/{model}", self._get_model)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port or 0))
            sock.listen(256)
            sock.setblocking(False)
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Wake up hanging ``"timeout"`` requests and shut the server down."""
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> LlmStub:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- controls and records ----------------------------------------------------------------

    def fail_next(self, kind: str, times: int = 1) -> None:
        """Queue ``times`` failures of ``kind`` (one of :data:`FAILURE_KINDS`), consumed one per
        authenticated chat request, in order."""
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}: expected one of {FAILURE_KINDS}")
        self._failures.extend([kind] * times)

    @property
    def pending_failures(self) -> list[str]:
        return list(self._failures)

    @property
    def inflight(self) -> int:
        """Chat requests being answered right now."""
        return self._inflight

    def last_request(self) -> dict[str, Any]:
        if not self.requests:
            raise AssertionError("the LLM stub has received no chat request")
        return self.requests[-1]

    def last_messages(self) -> list[dict[str, Any]]:
        """The ``messages`` of the last chat request."""
        return list(self.last_request().get("messages") or [])

    def clear(self) -> None:
        """Forget recorded requests, counters and queued failures (settings are kept)."""
        self.peak_inflight = self._inflight
        self.requests.clear()
        self.answers.clear()
        for record in (self.transcriptions, self.speech_requests, self.image_requests,
                       self.images_seen):  # fmt: skip
            record.clear()
        self.counts.clear()
        self._failures.clear()

    def reply_for(self, body: dict[str, Any]) -> str:
        """The reply the stub gives to a request body."""
        reply = self.reply
        if reply is None:
            return describe_images(body) + echo_reply(body)
        if callable(reply):
            return str(reply(body))
        return str(reply)

    # -- handlers ----------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}"

    def _unauthorized(self) -> web.Response:
        self.counts["unauthorized"] += 1
        return web.json_response(
            _error_body(
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            ),
            status=401,
        )

    async def _list_models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        self.counts["models"] += 1
        return web.json_response(
            {"object": "list", "data": [self._model_object(m) for m in self.models]}
        )

    async def _get_model(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        model = request.match_info["model"]
        if model not in self.models:
            return web.json_response(
                _error_body(
                    f"The model '{model}' does not exist", "invalid_request_error",
                    "model_not_found", "model",
                ),
                status=404,
            )  # fmt: skip
        return web.json_response(self._model_object(model))

    @staticmethod
    def _model_object(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1700000000, "owned_by": "llm-stub"}

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        self._inflight += 1
        self.peak_inflight = max(self.peak_inflight, self._inflight)
        try:
            return await self._answer(request)
        finally:
            self._inflight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.counts["bad_request"] += 1
            return web.json_response(
                _error_body("We could not parse the JSON body of your request.",
                            "invalid_request_error", None),
                status=400,
            )  # fmt: skip
        if not isinstance(body, dict):
            body = {"_raw": body}
        self.requests.append(body)
        self._record_image_parts(body)
        self.counts["requests"] += 1
        stream = bool(body.get("stream"))
        if stream:
            self.counts["stream"] += 1

        if not self._authorized(request):
            return self._unauthorized()
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not body.get("model"):
            self.counts["bad_request"] += 1
            missing = "model" if not body.get("model") else "messages"
            return web.json_response(
                _error_body(f"Missing required parameter: '{missing}'.",
                            "invalid_request_error", "missing_required_parameter", missing),
                status=400,
            )  # fmt: skip

        failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            self.counts[failure] += 1
        if self.latency > 0:
            await asyncio.sleep(self.latency)

        if failure == "429":
            return web.json_response(
                _error_body(
                    f"Rate limit reached for {body['model']} (llm-stub). Please try again.",
                    "rate_limit_error", "rate_limit_exceeded",
                ),
                status=429,
                headers={"retry-after": f"{self.retry_after:g}"},
            )  # fmt: skip
        if failure == "500":
            return web.json_response(
                _error_body(
                    "The server had an error while processing your request. Sorry about that!",
                    "server_error", None,
                ),
                status=500,
            )  # fmt: skip
        if failure == "timeout":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.hang_seconds)
            if self._closing.is_set():
                return web.Response(status=503, text="llm stub shutting down")

        text = self.reply_for(body)
        reasoning = self.reasoning(body) if callable(self.reasoning) else self.reasoning or ""
        self.answers.append({"content": text, "reasoning_content": reasoning, "stream": stream})
        finish = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and count_tokens(text) > limit:
            # As OpenAI does: the answer stops at the limit, finish_reason "length".
            text = "".join(split_reply(text)[:limit])
            finish = "length"
        completion_id = f"chatcmpl-stub{uuid.uuid4().hex[:20]}"
        created = int(time.time())
        usage = None
        if self.report_usage:
            p, c = prompt_tokens(messages), count_tokens(text) + count_tokens(reasoning)
            usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(
                request, body, text, completion_id, created,
                usage if include_usage else None, include_usage,
                broken=failure == "broken_stream", finish=finish, reasoning=reasoning,
            )  # fmt: skip

        completion: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "system_fingerprint": "fp_llm_stub",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        **({"reasoning_content": reasoning} if reasoning else {}),
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
        }
        if usage is not None:
            completion["usage"] = usage
        if failure == "broken_stream":
            raw = json.dumps(completion).encode()
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            response.content_length = len(raw)
            await response.prepare(request)
            await response.write(raw[: len(raw) // 2])
            await self._drop(request, response)
            return response
        self.counts["ok"] += 1
        return web.json_response(completion)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        text: str,
        completion_id: str,
        created: int,
        usage: dict[str, int] | None,
        include_usage: bool,
        *,
        broken: bool,
        finish: str = "stop",
        reasoning: str = "",
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            },
        )
        response.enable_chunked_encoding()
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            data: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "system_fingerprint": "fp_llm_stub",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:  # OpenAI sends "usage": null on every chunk but the last
                data["usage"] = None
            return data

        async def send(data: dict[str, Any] | str) -> None:
            payload = data if isinstance(data, str) else json.dumps(data)
            await response.write(f"data: {payload}\n\n".encode())

        try:
            await send(chunk({"role": "assistant", "content": "", "refusal": None}, None))
            for thought in split_reply(reasoning):
                if self.chunk_delay > 0:
                    await asyncio.sleep(self.chunk_delay)
                await send(chunk({"content": None, "reasoning_content": thought}, None))
            n = self.chunk_chars
            pieces = [text[i : i + n] for i in range(0, len(text), n)] if n else split_reply(text)
            for i, piece in enumerate(pieces):
                if broken and i == 2:
                    break
                if self.chunk_delay > 0:
                    await asyncio.sleep(self.chunk_delay)
                await send(chunk({"content": piece}, None))
            if broken:
                await self._drop(request, response)
                return response
            if self.chunk_delay > 0:
                await asyncio.sleep(self.chunk_delay)
            await send(chunk({}, finish))
            if include_usage and usage is not None:
                last = chunk({}, None)
                last["choices"] = []
                last["usage"] = usage
                await send(last)
            await send("[DONE]")
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            return response  # the client went away (e.g. it stopped reading)
        self.counts["ok"] += 1
        return response

    @staticmethod
    async def _drop(request: web.Request, response: web.StreamResponse) -> None:
        """Close the TCP connection in the middle of the response body."""
        await asyncio.sleep(0.05)  # let the partial body reach the client first
        transport = request.transport
        if transport is not None:
            transport.close()
        response.force_close()


# -- standalone ------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    stub = LlmStub(
        port=args.port,
        host=args.host,
        api_key=args.api_key,
        models=args.model or ["stub-model"],
        reply=args.reply,
        report_usage=not args.no_usage,
        latency=args.latency,
        chunk_delay=args.chunk_delay,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with stub:
        print(f"ready {stub.base_url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.llm_stub",
        description="OpenAI-compatible chat completions stub (echoes the last user message).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--model", action="append", help="listed by /v1/models (repeatable)")
    parser.add_argument("--reply", default=None, help="a fixed reply instead of the echo")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before first byte")
    parser.add_argument("--chunk-delay", type=float, default=0.01, help="seconds between chunks")
    parser.add_argument("--no-usage", action="store_true", help="never report token usage")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
