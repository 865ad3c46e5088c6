"""One event must never stop the others, nor the sync loop (a poison message). A bug is logged and
the event recorded as quarantined; a database error is tried again a few times and then
quarantined too, unless the database is away altogether: then the batch fails and comes again once
it is back, so nothing is lost to an outage."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.exc import SQLAlchemyError

from bot.store.events import EventLedger

log = structlog.get_logger(__name__)

ATTEMPTS = 3

# Handles one event; told whether this is a retry (its claim may already be taken).
Handler = Callable[[bool], Awaitable[None]]


class EventGuard:
    def __init__(self, ledger: EventLedger, *, attempts: int = ATTEMPTS) -> None:
        self._ledger = ledger
        self._attempts = attempts
        self.quarantined = 0

    async def run(self, room_id: str, event_id: str | None, handle: Handler) -> None:
        """Raises only when the database cannot be reached at all."""
        error = ""
        attempt = 0
        for attempt in range(1, self._attempts + 1):
            try:
                await handle(attempt > 1)
                return
            except SQLAlchemyError as problem:
                if not await self._ledger.database_reachable():
                    raise
                error = f"{type(problem).__name__}: {str(problem)[:300]}"
                if attempt < self._attempts:
                    log.warning("matrix.event_retry", room_id=room_id, event_id=event_id,
                                attempt=attempt, error=type(problem).__name__)  # fmt: skip
                    await asyncio.sleep(0.1 * attempt)
                    continue
            except Exception as problem:
                log.exception("matrix.event_failed", room_id=room_id, event_id=event_id)
                error = f"{type(problem).__name__}: {str(problem)[:300]}"
            break
        await self._quarantine(room_id, event_id, attempt, error)

    async def _quarantine(
        self, room_id: str, event_id: str | None, attempts: int, error: str
    ) -> None:
        self.quarantined += 1
        log.error("matrix.event_quarantined", room_id=room_id, event_id=event_id,
                  attempts=attempts, error=error.split(":", 1)[0])  # fmt: skip
        if event_id is None:
            return
        try:
            await self._ledger.quarantine(event_id, room_id, attempts, error)
        except SQLAlchemyError:
            log.warning("matrix.quarantine_not_recorded", event_id=event_id)
