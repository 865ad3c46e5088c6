"""Delivers outbox messages (written by the web app or scheduled work) as soon as they appear, and
whatever was left undelivered when the bot was down."""

from __future__ import annotations

import asyncio

import structlog

from bot.community.outbox import Outbox
from bot.matrix.direct import DirectMessenger
from bot.matrix.render import message_content
from bot.matrix.sender import Sender

log = structlog.get_logger(__name__)


class OutboxCourier:
    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        direct: DirectMessenger,
        *,
        poll_interval_s: float = 1.0,
    ) -> None:
        self._outbox = outbox
        self._sender = sender
        self._direct = direct
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was just queued in this process: deliver now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self.deliver_pending()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def deliver_pending(self) -> int:
        delivered = 0
        for message in await self._outbox.pending():
            try:
                room_id = message.room_id or await self._direct.room_for(message.recipient or "")
                await self._sender.send(room_id, message_content(message.body))
            except Exception as problem:  # one bad message must not stop the others
                attempts = await self._outbox.mark_failed(message.id, str(problem))
                log.warning(
                    "outbox.delivery_failed",
                    outbox_id=message.id,
                    attempts=attempts,
                    error=str(problem),
                )
                continue
            await self._outbox.mark_delivered(message.id)
            delivered += 1
            log.info("outbox.delivered", outbox_id=message.id, room_id=room_id)
        return delivered
