"""Sending to rooms: one message at a time per room (order kept), waiting out the homeserver's
rate limit (M_LIMIT_EXCEEDED / retry_after_ms) and short network failures, failing loudly after."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from nio import Api, AsyncClient, ErrorResponse, RoomSendResponse
from nio.exceptions import LocalProtocolError

from bot.keyed_lock import KeyedLock
from bot.matrix.client import CONNECT_ERRORS
from bot.matrix.message_size import MAX_EVENT_BYTES, event_bytes, render_parts
from bot.matrix.render import edit_content
from bot.metrics import NO_METRICS, Metrics

log = structlog.get_logger(__name__)

ROOM_WAIT_S = 15.0


class SendError(Exception):
    """A message could not be delivered; the text says why."""


class TooLargeError(SendError):
    """The event is over the homeserver's size limit; sending it again would not help."""


class Sender:
    def __init__(
        self,
        client: AsyncClient,
        *,
        rate_limit_budget_s: float = 300.0,
        network_retries: int = 5,
    ) -> None:
        self._client = client
        self._locks: KeyedLock[str] = KeyedLock()  # one send at a time per room, in order
        self._rate_limit_budget_s = rate_limit_budget_s
        self._network_retries = network_retries
        self.rate_limited_count = 0  # how often the homeserver told us to slow down
        self.metrics: Metrics = NO_METRICS
        # Active/standby (bot/leader.py): called before every send; ends a leader whose lease ran out.
        self.fence: Callable[[str], None] | None = None

    @property
    def busy(self) -> bool:
        """A message is being sent or waits to be (background work such as paced redactions
        gives it the homeserver's rate budget first)."""
        return len(self._locks) > 0

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
        async with self._locks(room_id):
            await self._ready_to_encrypt(room_id)
            content = self._without_needless_mentions(room_id, content)
            return await self._send_with_retry(room_id, event_type, content, txn_id)

    def _without_needless_mentions(self, room_id: str, content: dict[str, Any]) -> dict[str, Any]:
        """An empty `m.mentions` ("nobody") is left out in a room of two: there it only stops the
        one member's client from inferring a mention of them (or @room) from the text, and the
        message notifies them anyway. Synapse's push rules cost twice as much with it (6 ms of
        its CPU per message instead of 3, measured). In a larger room it stays: no member is
        highlighted, nor everyone notified, by text the bot repeats."""
        if content.get("m.mentions") != {}:
            return content
        room = self._client.rooms.get(room_id)
        if room is None or len(room.users) > 2 or room.member_count > 2:  # each O(1)
            return content
        return {key: value for key, value in content.items() if key != "m.mentions"}

    async def send_markdown(
        self,
        room_id: str,
        markdown: str,
        *,
        txn_id: str | None = None,
        **options: Any,
    ) -> list[str]:
        """Render and send `markdown`, in several messages when it is too long for one (see
        message_size.py). Returns the event ids, first part first; `options` are those of
        message_content (msgtype, mentions, reply_to, thread_root)."""
        parts = await render_parts(markdown, **options)
        return [
            await self.send(room_id, part, txn_id=f"{txn_id}-{i}" if txn_id and i else txn_id)
            for i, part in enumerate(parts)
        ]

    async def _ready_to_encrypt(self, room_id: str, wait_s: float = ROOM_WAIT_S) -> None:
        """With encryption on, nio sends only to rooms its sync knows, and shares the room key
        only with devices whose keys it has: wait for a room just created (a new DM), and fetch
        members' device keys first, so the first message is readable by everyone in the room."""
        client = self._client
        if client.olm is None:
            return
        deadline = time.monotonic() + wait_s
        while room_id not in client.rooms and time.monotonic() < deadline:  # noqa: ASYNC110 - nio has no event for it
            await asyncio.sleep(0.1)
        room = client.rooms.get(room_id)
        if room is None or not room.encrypted:
            return
        try:
            if client.should_query_keys:
                await client.keys_query()
        except CONNECT_ERRORS as problem:
            log.warning("crypto.keys_query_failed", room_id=room_id, error=str(problem))

    async def send_plaintext(self, room_id: str, content: dict[str, Any]) -> str:
        """Send without encryption even in an encrypted room: for telling someone whose
        encryption is broken what to do, in words they can read."""
        async with self._locks(room_id):
            if self.fence is not None:
                self.fence("sending")
            method, path, data = Api.room_send(
                self._client.access_token, room_id, "m.room.message", content, f"cb{time.time_ns()}"
            )
            response = await self._client._send(RoomSendResponse, method, path, data, (room_id,))
            if not isinstance(response, RoomSendResponse):
                raise SendError(f"{response.status_code or 'error'}: {response.message}")
            return response.event_id

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
        if event_bytes(content) > MAX_EVENT_BYTES:
            raise TooLargeError("the message is too large for the homeserver")
        deadline = time.monotonic() + self._rate_limit_budget_s
        network_failures = 0
        # One transaction id for every attempt: the homeserver de-duplicates a retried send.
        txn_id = txn_id or f"cb{time.time_ns()}"
        while True:
            if self.fence is not None:
                self.fence("sending")
            try:
                response = await self._client.room_send(
                    room_id, event_type, content, tx_id=txn_id, ignore_unverified_devices=True
                )
            except LocalProtocolError as problem:  # nio could not encrypt for this room
                raise SendError(f"encryption: {problem}") from None
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
                self.metrics.rate_limited(wait)
                await asyncio.sleep(wait)
                continue
            if response.status_code == "M_TOO_LARGE":
                raise TooLargeError("the homeserver refused the message as too large")
            raise SendError(f"{response.status_code or 'error'}: {response.message}")
