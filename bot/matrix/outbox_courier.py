"""Delivers outbox messages (written by the web app or scheduled work) as soon as they appear, and
whatever was left undelivered when the bot was down. A message that fails is retried with growing
pauses; the courier itself never stops, whatever the database or the homeserver do."""

from __future__ import annotations

import asyncio
import time

import structlog

from bot.community.outbox import MAX_ATTEMPTS, Outbox, PendingMessage
from bot.matrix.direct import DirectMessenger
from bot.matrix.render import message_content
from bot.matrix.sender import Sender

log = structlog.get_logger(__name__)

MAX_RETRY_PAUSE_S = 300.0


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
        self._not_before: dict[int, float] = {}  # message id -> monotonic time of the next try

    def wake(self) -> None:
        """Something was just queued in this process: deliver now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.deliver_pending()
            except Exception:  # the database is away, or a bug: log, wait, go on
                log.exception("outbox.round_failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def deliver_pending(self) -> int:
        delivered = 0
        now = time.monotonic()
        for message in await self._outbox.pending():
            if self._not_before.get(message.id, 0) > now:
                continue
            if await self._deliver(message):
                delivered += 1
        return delivered

    async def _deliver(self, message: PendingMessage) -> bool:
        try:
            room_id = message.room_id or await self._direct.room_for(message.recipient or "")
            if message.recipient and self._direct.awaiting_join(room_id, message.recipient):
                return False  # not a failure: delivered once they accept the invite
            # The same transaction id on every attempt: a resend after a crash is not a duplicate.
            await self._sender.send(room_id, message_content(message.body), txn_id=message.key)
        except Exception as problem:  # one bad message must not stop the others
            attempts = await self._outbox.mark_failed(message.id, str(problem))
            pause = min(MAX_RETRY_PAUSE_S, 2.0**attempts)
            self._not_before[message.id] = time.monotonic() + pause
            event = "outbox.gave_up" if attempts >= MAX_ATTEMPTS else "outbox.delivery_failed"
            log.warning(
                event, outbox_id=message.id, attempts=attempts, retry_in_s=pause, error=str(problem)
            )
            return False
        await self._outbox.mark_delivered(message.id)
        self._not_before.pop(message.id, None)
        log.info("outbox.delivered", outbox_id=message.id, room_id=room_id)
        return True
