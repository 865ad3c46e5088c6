"""The LanguageModel the chat domain asks, over any OpenAI-compatible endpoint via langchain-openai.
Timeouts, 429 and 5xx are retried by the OpenAI client with backoff (`max_retries`); what still
fails becomes a ModelError with a short message for the member, and a log line for operators.

langchain and the openai SDK take a second and tens of MiB to import, partly on first use (openai
loads its streaming code lazily): they are loaded in a worker thread when the first question
comes, so a bot nobody asks stays lean and neither its start nor its event loop waits for them."""

from __future__ import annotations

import asyncio
import gc
import importlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from bot.community.chat import Completion, LanguageModel, ModelError, PromptMessage, TextCallback
from bot.lru import LRUDict
from bot.metrics import NO_METRICS, Metrics

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

log = structlog.get_logger(__name__)

# What a first request would otherwise import on the event loop.
_LIBRARIES = (
    "httpx", "openai", "langchain_core.messages", "langchain_openai",
    "openai.lib.streaming.chat", "openai.resources.chat.completions", "bot.llm.reasoning_client",
)  # fmt: skip


def _import_libraries() -> None:
    for name in _LIBRARIES:
        importlib.import_module(name)
    # What they built lives as long as the process: out of the garbage collector's sight, or a
    # full collection over it would stall the event loop now and then.
    gc.freeze()


def _prompt(messages: Sequence[PromptMessage]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m.role](content=_content(m)) for m in messages]


def _content(message: PromptMessage) -> str | list[str | dict[str, Any]]:
    """Text, or (a message with images) OpenAI's content parts: the text, then each image."""
    if not message.images:
        return message.content
    parts: list[str | dict[str, Any]] = [{"type": "text", "text": message.content}]
    parts.extend({"type": "image_url", "image_url": {"url": url}} for url in message.images)
    return parts


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return ""


def _error_kind(cause: BaseException | None) -> str:
    """The openai SDK's name for an error (langchain wraps some in its own subclasses), so the
    metrics' labels do not change with the langchain version; None: the answer was empty."""
    if cause is None:
        return "EmptyAnswer"
    kinds = type(cause).__mro__
    return next((k.__name__ for k in kinds if k.__module__.startswith("openai")), kinds[0].__name__)


class OpenAICompatibleModel(LanguageModel):
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        temperature: float,
        timeout: float,
        max_retries: int,
        stream: bool,
    ) -> None:
        self._options = {
            "base_url": base_url,
            # Local endpoints (vLLM, Ollama) need no key, but the client insists on one.
            "api_key": api_key or "not-needed",
            "temperature": temperature,
            "timeout": timeout,
            "max_retries": max_retries,
        }
        self._stream = stream
        self._ready_for: str | None = None  # the model whose client warm_up() made
        # Rooms may name any model: keep a client for the few in use, not one per name ever seen.
        self._clients: LRUDict[str, ChatOpenAI] = LRUDict(16)
        # One HTTP connection pool of our own for every model's client. Left to itself,
        # langchain-openai shares a process-wide pool per base URL (lru_cache), which outlives
        # the event loop it was first used in (a second loop then meets "Event loop is closed").
        self._http: Any = None
        self.metrics: Metrics = NO_METRICS

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
            self._clients.clear()
            self._ready_for = None

    async def warm_up(self, model: str) -> None:
        """Import the libraries and make the client for `model`, in a worker thread."""
        if self._ready_for != model:
            await asyncio.to_thread(lambda: (_import_libraries(), self._client(model)))
            self._ready_for = model

    def _client(self, model: str) -> ChatOpenAI:
        if model not in self._clients:
            # ChatOpenAI, keeping a reasoning model's `reasoning_content`.
            import httpx

            from bot.llm.reasoning_client import ReasoningChatOpenAI

            if self._http is None:
                self._http = httpx.AsyncClient()
            self._clients[model] = ReasoningChatOpenAI(
                model=model, streaming=self._stream, stream_usage=True,
                http_async_client=self._http, **self._options,
            )  # fmt: skip
        return self._clients[model]

    async def complete(
        self,
        messages: Sequence[PromptMessage],
        *,
        model: str,
        on_text: TextCallback | None,
        **options: Any,
    ) -> Completion:
        """Ask the model (see `_complete`), counted in the metrics: latency, tokens, errors."""
        await self.warm_up(model)  # the first import is not the endpoint's latency
        started = time.monotonic()
        try:
            completion = await self._complete(messages, model=model, on_text=on_text, **options)
        except ModelError as problem:
            kind = _error_kind(problem.__context__)  # what the endpoint did
            self.metrics.assistant_failed(model, kind, time.monotonic() - started)
            raise
        self.metrics.assistant_answered(
            model, time.monotonic() - started, completion.prompt_tokens,
            completion.completion_tokens,
        )  # fmt: skip
        return completion

    async def _complete(
        self,
        messages: Sequence[PromptMessage],
        *,
        model: str,
        on_text: TextCallback | None,
        max_tokens: int | None = None,
        on_reasoning: TextCallback | None = None,
    ) -> Completion:
        prompt = _prompt(messages)
        client = self._client(model)
        options: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
        usage: dict[str, Any] | None = None
        text = reasoning = ""
        finish: str | None = None
        try:
            if self._stream and on_text is not None:
                async for chunk in client.astream(prompt, **options):
                    thought = chunk.additional_kwargs.get("reasoning_content")
                    if isinstance(thought, str) and thought:
                        reasoning += thought
                        if on_reasoning is not None:
                            on_reasoning(reasoning)
                    piece = _text(chunk.content)
                    if piece:
                        text += piece
                        on_text(text)
                    if chunk.usage_metadata:
                        usage = dict(chunk.usage_metadata)
                    finish = chunk.response_metadata.get("finish_reason") or finish
            else:
                result = await client.ainvoke(prompt, **options)
                text = _text(result.content)
                thought = result.additional_kwargs.get("reasoning_content")
                reasoning = thought if isinstance(thought, str) else ""
                usage = dict(result.usage_metadata) if result.usage_metadata else None
                finish = result.response_metadata.get("finish_reason")
        except ModelError:
            raise
        except Exception as problem:
            if text or reasoning:  # some of the answer had come: it broke off, it was reachable
                log.warning("gpt.stream_cut", model=model, error=type(problem).__name__)
                raise ModelError(
                    "The answer broke off halfway: the connection to the assistant's service "
                    "was lost. Please ask again."
                ) from None
            raise self._explain(problem, model) from None
        if not text.strip() and not reasoning.strip():
            raise ModelError("The assistant sent an empty answer. Please try again.")
        return Completion(
            text,
            prompt_tokens=usage.get("input_tokens") if usage else None,
            completion_tokens=usage.get("output_tokens") if usage else None,
            cut_short=finish == "length",
            reasoning=reasoning,
        )

    def _explain(self, problem: Exception, model: str) -> ModelError:
        """Map what went wrong to words for the member; the details go to the log."""
        import httpx
        import openai

        status = getattr(problem, "status_code", None)
        log.warning("gpt.request_failed", model=model, error=type(problem).__name__, status=status)
        if isinstance(problem, openai.RateLimitError):
            return ModelError(
                "The assistant is overloaded right now. Please try again in a minute."
            )
        if isinstance(problem, openai.APITimeoutError):
            return ModelError("The assistant took too long to answer. Please try again.")
        if isinstance(problem, openai.AuthenticationError | openai.PermissionDeniedError):
            log.error(
                "gpt.credentials_refused", model=model, hint="check [gpt] api_key and base_url"
            )
            return ModelError(
                "The assistant is not set up correctly; the operators can see why in the log."
            )
        if isinstance(problem, openai.NotFoundError):
            return ModelError(f"The model {model} is not available at the assistant's service.")
        if isinstance(problem, openai.APIStatusError):
            return ModelError(
                f"The assistant's service failed (HTTP {status}). Please try again later."
            )
        if isinstance(problem, openai.APIConnectionError):
            return ModelError(
                "The assistant's service cannot be reached right now. Please try again later."
            )
        if isinstance(problem, httpx.HTTPError | openai.APIError | ValueError):
            return ModelError("The answer was cut off by a network problem. Please ask again.")
        log.exception("gpt.unexpected_error", model=model)
        return ModelError("Something went wrong while asking the assistant. It has been logged.")
