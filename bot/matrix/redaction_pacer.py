"""Redactions of what the protections caught, sent in the background at a pace the homeserver
accepts, behind the bot's replies: a flood of 200 messages must not spend the bot's rate budget
(Synapse counts redactions against `rc_message`) and leave members' commands waiting. Redactions
wait while a reply is being sent; an M_LIMIT_EXCEEDED is waited out with room to spare (the
pause doubles, so replies find the budget refilled) and the pace slows; successes speed it up
again. Nothing here ever blocks the sync loop or a room's command queue."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import structlog
from nio import AsyncClient, ErrorResponse

from bot.matrix.client import CONNECT_ERRORS
from bot.matrix.sender import Sender

log = structlog.get_logger(__name__)

MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 30.0
REPLY_QUIET_S = 1.0  # redactions wait this long after the bot's last reply went out
MAX_QUEUED = 10_000
MAX_ATTEMPTS = 5


class RedactionPacer:
    def __init__(self, client: AsyncClient, sender: Sender, *,
                 interval: float = MIN_INTERVAL_S) -> None:  # fmt: skip
        self._client, self._sender = client, sender
        self._base = self.interval = interval
        self._max = max(MAX_INTERVAL_S, interval * 4)
        self._queue: deque[tuple[str, str, str, int]] = deque()
        self._queued: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.done = 0
        self.rate_limited = 0
        # Told of each redaction given up (room id, error code): the admin room hears of it.
        self.failed: Callable[[str, str], None] = lambda _room_id, _error: None
        self._last_busy = 0.0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, room_id: str, event_ids: list[str], reason: str) -> None:
        for event_id in event_ids:
            if event_id in self._queued or len(self._queue) >= MAX_QUEUED:
                continue
            self._queued.add(event_id)
            self._queue.append((room_id, event_id, reason[:200], 0))
        if self._queue and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name="redactions")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _replies_first(self) -> None:
        while True:
            now = time.monotonic()
            if self._sender.busy:
                self._last_busy = now
            if now - self._last_busy >= REPLY_QUIET_S:
                return
            await asyncio.sleep(0.1)

    async def _run(self) -> None:
        while self._queue:
            await asyncio.sleep(self.interval)
            await self._replies_first()
            room_id, event_id, reason, attempts = self._queue.popleft()
            try:
                response = await self._client.room_redact(room_id, event_id, reason)
            except CONNECT_ERRORS as problem:
                log.warning("protections.redact_unreachable", error=str(problem))
                response = None
            if response is None or isinstance(response, ErrorResponse):
                code = getattr(response, "status_code", None)
                if code == "M_LIMIT_EXCEEDED":
                    self.rate_limited += 1
                    wait = (getattr(response, "retry_after_ms", None) or 1000) / 1000
                    self.interval = min(self._max, max(self.interval * 2, wait))
                    self._queue.appendleft((room_id, event_id, reason, attempts))
                    log.info("protections.redactions_paced", wait_s=round(wait * 2, 1),
                             interval_s=round(self.interval, 1), queued=len(self._queue))  # fmt: skip
                    await asyncio.sleep(wait * 2)  # and a reserve for the replies
                    continue
                if response is None and attempts + 1 < MAX_ATTEMPTS:
                    self._queue.append((room_id, event_id, reason, attempts + 1))
                    await asyncio.sleep(2.0)
                    continue
                log.warning("protections.redact_failed", room_id=room_id, event_id=event_id,
                            error=code or "unreachable")  # fmt: skip
                self.failed(room_id, code or "the homeserver could not be reached")
            else:
                self.done += 1
                self.interval = max(self._base, self.interval * 0.8)
            self._queued.discard(event_id)
