"""Sending to rooms: one message at a time per room (order kept), waiting out the homeserver's
rate limit (M_LIMIT_EXCEEDED / retry_after_ms) and short network failures, failing loudly after."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import structlog
from nio import AsyncClient, ErrorResponse, RoomSendResponse

from bot.matrix.client import CONNECT_ERRORS
from bot.matrix.render import edit_content

log = structlog.get_logger(__name__)


class SendError(Exception):
    """A message could not be delivered; the text says why."""


class Sender:
    def __init__(
        self,
        client: AsyncClient,
        *,
        rate_limit_budget_s: float = 300.0,
        network_retries: int = 5,
    ) -> None:
        self._client = client
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._rate_limit_budget_s = rate_limit_budget_s
        self._network_retries = network_retries
        self.rate_limited_count = 0  # how often the homeserver told us to slow down

    async def send(
        self,
        room_id: str,
        content: dict[str, Any],
        event_type: str = "m.room.message",
        *,
        txn_id: str | None = None,
    ) -> str:
        """Send and return the event id, in the order calls were made for this room. A stable
        `txn_id` makes a resend of the same message (after a crash) a no-op at the homeserver."""
        async with self._locks[room_id]:
            return await self._send_with_retry(room_id, event_type, content, txn_id)

    async def edit(self, room_id: str, event_id: str, new_content: dict[str, Any]) -> str:
        return await self.send(room_id, edit_content(event_id, new_content))

    async def typing(self, room_id: str, on: bool = True, timeout_ms: int = 30_000) -> None:
        """Best effort: a typing notice that fails is not worth more than a debug line."""
        try:
            await self._client.room_typing(room_id, typing_state=on, timeout=timeout_ms)
        except CONNECT_ERRORS as problem:
            log.debug("matrix.typing_failed", room_id=room_id, error=str(problem))

    async def _send_with_retry(
        self, room_id: str, event_type: str, content: dict[str, Any], txn_id: str | None
    ) -> str:
        deadline = time.monotonic() + self._rate_limit_budget_s
        network_failures = 0
        # One transaction id for every attempt: the homeserver de-duplicates a retried send.
        txn_id = txn_id or f"cb{time.time_ns()}"
        while True:
            try:
                response = await self._client.room_send(
                    room_id, event_type, content, tx_id=txn_id, ignore_unverified_devices=True
                )
            except CONNECT_ERRORS as problem:
                network_failures += 1
                if network_failures > self._network_retries:
                    raise SendError(f"homeserver unreachable: {problem}") from None
                wait = min(2 ** (network_failures - 1), 30)
                log.warning("matrix.send_retry", room_id=room_id, reason="network", wait_s=wait)
                await asyncio.sleep(wait)
                continue
            if isinstance(response, RoomSendResponse):
                return response.event_id
            assert isinstance(response, ErrorResponse)
            if response.status_code == "M_LIMIT_EXCEEDED":
                self.rate_limited_count += 1
                wait = (response.retry_after_ms or 1000) / 1000
                if time.monotonic() + wait > deadline:
                    raise SendError("the homeserver kept rate-limiting the bot") from None
                log.info("matrix.rate_limited", room_id=room_id, retry_after_ms=int(wait * 1000))
                await asyncio.sleep(wait)
                continue
            raise SendError(f"{response.status_code or 'error'}: {response.message}")
