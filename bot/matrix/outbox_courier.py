"""Delivers outbox messages (written by the web app or scheduled work) as soon as they appear, and
whatever was left undelivered when the bot was down. A message that fails is retried with growing
pauses, and one whose recipient has not joined their DM waits without counting as a failure;
either way it steps aside for the others. The courier itself never stops, whatever the database or
the homeserver do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog

from bot.community.outbox import ACCESS, LOGIN_LINK, MAX_ATTEMPTS, Outbox, PendingMessage
from bot.matrix.direct import DirectMessenger
from bot.matrix.sender import Sender
from bot.store.models import utcnow

log = structlog.get_logger(__name__)

MAX_RETRY_PAUSE_S = 300.0
AWAITING_JOIN_PAUSE = timedelta(seconds=30)  # a join wakes it sooner (see recipient_joined)

# Makes the text of a message that is composed when it goes out (a fresh login link).
Composer = Callable[[PendingMessage], Awaitable[str]]
# Brings a member's group-gated rooms up to date (an ACCESS row); raises to be tried again.
AccessUpdater = Callable[[str], Awaitable[object]]


async def _as_stored(message: PendingMessage) -> str:
    return message.body


class OutboxCourier:
    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        direct: DirectMessenger,
        *,
        poll_interval_s: float = 1.0,
        compose_login_link: Composer = _as_stored,
        update_access: AccessUpdater | None = None,
    ) -> None:
        self._outbox = outbox
        self._sender = sender
        self._direct = direct
        self._poll_interval_s = poll_interval_s
        self._compose_login_link = compose_login_link
        self._update_access = update_access
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was just queued in this process: deliver now rather than at the next poll."""
        self._wake.set()

    async def recipient_joined(self, mxid: str) -> None:
        """A member joined a room: anything waiting for them to accept their DM may go now."""
        if await self._outbox.due_now_for(mxid):
            self.wake()

    async def run(self) -> None:
        while True:
            try:
                while await self.deliver_pending():
                    pass  # a full batch went: there may be more
            except Exception:  # the database is away, or a bug: log, wait, go on
                log.exception("outbox.round_failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def deliver_pending(self) -> int:
        """One batch of due messages; returns how many were delivered."""
        delivered = 0
        for message in await self._outbox.pending():
            if await self._deliver(message):
                delivered += 1
        return delivered

    async def _deliver(self, message: PendingMessage) -> bool:
        if message.kind == ACCESS:  # nothing to send: the member's rooms to bring up to date
            return await self._access(message)
        try:
            room_id = message.room_id or await self._direct.room_for(message.recipient or "")
            delay = self._direct.send_delay(room_id, message.recipient) if message.recipient else 0
            if delay != 0:
                # Not a failure: delivered once they accept the invite (and their client is
                # ready). Meanwhile the others go.
                wait = AWAITING_JOIN_PAUSE if delay is None else timedelta(seconds=delay)
                await self._outbox.postpone(message.id, utcnow() + wait)
                return False
            body = (
                await self._compose_login_link(message)
                if message.kind == LOGIN_LINK
                else message.body
            )
            # The same transaction id on every attempt: a resend after a crash is not a duplicate.
            await self._sender.send_markdown(room_id, body, txn_id=message.key)
        except Exception as problem:  # one bad message must not stop the others
            await self._failed(message, problem)
            return False
        await self._outbox.mark_delivered(message.id)
        log.info("outbox.delivered", outbox_id=message.id, room_id=room_id)
        return True

    async def _access(self, message: PendingMessage) -> bool:
        try:
            if self._update_access is not None:  # None: no [[access.rooms]], nothing to do
                await self._update_access(message.recipient or "")
        except Exception as problem:  # retried like a message; planning is done afresh
            await self._failed(message, problem)
            return False
        await self._outbox.mark_delivered(message.id)
        log.info("outbox.access_updated", outbox_id=message.id)
        return True

    async def _failed(self, message: PendingMessage, problem: Exception) -> None:
        pause = min(MAX_RETRY_PAUSE_S, 2.0 ** (message.attempts + 1))
        attempts = await self._outbox.mark_failed(
            message.id, str(problem), utcnow() + timedelta(seconds=pause)
        )
        event = "outbox.gave_up" if attempts >= MAX_ATTEMPTS else "outbox.delivery_failed"
        log.warning(
            event, outbox_id=message.id, attempts=attempts, retry_in_s=pause, error=str(problem)
        )
