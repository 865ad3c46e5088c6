"""Counting tokens: tiktoken where it knows the model (and can load its encoding), otherwise a
conservative estimate that errs on the side of too many, so budgets hold either way.

Loading an encoding imports tiktoken and may download a file: that happens once per model, in a
background thread, never in the caller's way; until it is ready the estimate is used."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

# Per message: the role and the separators the chat format adds around each message.
MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """An upper-bound guess: no mainstream tokenizer averages under 3 UTF-8 bytes per token
    on prose, and one token per non-space run covers short words."""
    by_bytes = math.ceil(len(text.encode("utf-8")) / 3)
    return max(by_bytes, len(text.split()))


MAX_MODELS = 16
_encoders: dict[str, Callable[[str], int] | None] = {}  # None: estimating for good
_loading: set[str] = set()
_lock = threading.Lock()


def _load(model: str) -> None:
    try:
        import tiktoken

        encoding = tiktoken.encoding_for_model(model)
        encoder: Callable[[str], int] | None = lambda text: len(  # noqa: E731
            encoding.encode(text, disallowed_special=())
        )
    except Exception as problem:  # unknown model, or the encoding cannot be downloaded
        log.info("tokens.estimating", model=model, reason=type(problem).__name__)
        encoder = None
    with _lock:
        _encoders[model] = encoder
        _loading.discard(model)


def _encoder(model: str) -> Callable[[str], int] | None:
    """The model's tokenizer once loaded; until then (and for unknown models) None."""
    with _lock:
        if model in _encoders:
            return _encoders[model]
        if model in _loading or len(_encoders) + len(_loading) >= MAX_MODELS:
            return None
        _loading.add(model)
    threading.Thread(target=_load, args=(model,), name="tokenizer", daemon=True).start()
    return None


def count_tokens(text: str, model: str) -> int:
    encoder = _encoder(model)
    return encoder(text) if encoder else estimate_tokens(text)


def message_tokens(text: str, model: str) -> int:
    return count_tokens(text, model) + MESSAGE_OVERHEAD
