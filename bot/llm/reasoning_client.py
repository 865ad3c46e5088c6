"""ChatOpenAI that keeps a reasoning model's thinking. langchain-openai (1.7) targets OpenAI's own
API and drops the non-standard `reasoning_content` (DeepSeek, vLLM's reasoning parsers, LocalAI;
OpenRouter calls it `reasoning`) from chunks and responses alike: here it is put back into the
message's `additional_kwargs["reasoning_content"]`. Imported only with langchain, on first use."""

from __future__ import annotations

from typing import Any

from langchain_openai import ChatOpenAI

REASONING_FIELDS = ("reasoning_content", "reasoning")


def reasoning_of(message: Any) -> str:
    """The thinking in a raw message or delta (a dict), or ""."""
    if not isinstance(message, dict):
        return ""
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


class ReasoningChatOpenAI(ChatOpenAI):
    def _convert_chunk_to_generation_chunk(  # type: ignore[override]
        self, chunk: dict, default_chunk_class: type, base_generation_info: dict | None
    ) -> Any:
        generation = super()._convert_chunk_to_generation_chunk(
            chunk, default_chunk_class, base_generation_info
        )
        choices = chunk.get("choices") or (chunk.get("chunk") or {}).get("choices") or []
        if generation is not None and choices and isinstance(choices[0], dict):
            thought = reasoning_of(choices[0].get("delta"))
            if thought:
                generation.message.additional_kwargs["reasoning_content"] = thought
        return generation

    def _create_chat_result(self, response: Any, generation_info: dict | None = None) -> Any:
        result = super()._create_chat_result(response, generation_info)
        raw = response if isinstance(response, dict) else response.model_dump()
        for generation, choice in zip(result.generations, raw.get("choices") or [], strict=False):
            thought = reasoning_of((choice or {}).get("message"))
            if thought:
                generation.message.additional_kwargs["reasoning_content"] = thought
        return result
