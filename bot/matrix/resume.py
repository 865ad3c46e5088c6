"""After a restart: take up the commands and questions a previous run claimed but never finished,
and never leave an answer half-written on screen (too late to answer: the placeholder becomes a
short notice instead)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog
from nio import AsyncClient, MegolmEvent, RoomMessageText

from bot.matrix.chat_relay import ChatRelay
from bot.store.events import EventLedger

log = structlog.get_logger(__name__)

INTERRUPTED_KEPT = timedelta(days=1)  # half answers older than the resume window still get tidied

TextHandler = Callable[[str, RoomMessageText], Awaitable[None]]


async def resume_unfinished(
    client: AsyncClient,
    ledger: EventLedger,
    relay: ChatRelay | None,
    handle: TextHandler,
    *,
    since: datetime,
    before: datetime,
) -> int:
    """Claims made between `since` and `before` (this run's start) are handled again by
    `handle(room_id, event)`; older unfinished ones (up to INTERRUPTED_KEPT) only get their
    placeholder tidied. Returns how many were taken up."""
    resumed = 0
    for claim in await ledger.unfinished(since - INTERRUPTED_KEPT, before):
        bound = log.bind(room_id=claim.room_id, event_id=claim.event_id)
        try:
            event = None
            if claim.handled_at >= since:
                response = await client.room_get_event(claim.room_id, claim.event_id)
                event = getattr(response, "event", response)
                if isinstance(event, MegolmEvent):
                    event = client.decrypt_event(event)
            if isinstance(event, RoomMessageText):
                await handle(claim.room_id, event)
                resumed += 1
                bound.info("matrix.resumed")
                continue
            bound.warning("matrix.resume_skipped", reason=type(event).__name__)
            if claim.reply_event_id is not None and relay is not None:
                await relay.interrupted(claim.room_id, claim.reply_event_id)
        except Exception as problem:
            bound.warning("matrix.resume_failed", error=str(problem))
        await ledger.finish(claim.event_id)
    return resumed
