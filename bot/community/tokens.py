"""Counting tokens: tiktoken where it knows the model (and can load its encoding), otherwise a
conservative estimate that errs on the side of too many, so budgets hold either way."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import structlog

log = structlog.get_logger(__name__)

# Per message: the role and the separators the chat format adds around each message.
MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """An upper-bound guess: no mainstream tokenizer averages under 3 UTF-8 bytes per token
    on prose, and one token per non-space run covers short words."""
    by_bytes = math.ceil(len(text.encode("utf-8")) / 3)
    return max(by_bytes, len(text.split()))


@lru_cache(maxsize=16)
def _encoder(model: str) -> Callable[[str], int] | None:
    try:
        import tiktoken

        encoding = tiktoken.encoding_for_model(model)
    except Exception as problem:  # unknown model, or the encoding cannot be downloaded
        log.info("tokens.estimating", model=model, reason=type(problem).__name__)
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def count_tokens(text: str, model: str) -> int:
    encoder = _encoder(model)
    return encoder(text) if encoder else estimate_tokens(text)


def message_tokens(text: str, model: str) -> int:
    return count_tokens(text, model) + MESSAGE_OVERHEAD
