"""How long the event loop was kept from running: a task that asks to wake every `interval`
seconds records by how much each wake-up came late. The bot runs in the test's event loop, so a
handler that blocks (a backtracking regex, a render of 64 KiB on the loop) shows up here.

A watchdog thread notes where the loop's thread was while it was stuck (the stack of the first
stall over `report_after` seconds), so a failure says what blocked, not only for how long."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field


@dataclass
class LoopLag:
    interval: float = 0.005
    report_after: float = 0.08
    worst: float = 0.0
    overall: float = 0.0
    samples: int = 0
    late: list[float] = field(default_factory=list)  # every lag above 50 ms, for the report
    stacks: list[str] = field(default_factory=list)  # where the loop was during long stalls
    _task: asyncio.Task[None] | None = None
    _beat: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _watchdog: threading.Thread | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            self._beat = time.monotonic()
            await asyncio.sleep(self.interval)
            lag = loop.time() - before - self.interval
            self.samples += 1
            self.worst = max(self.worst, lag)
            if lag > 0.05:
                self.late.append(round(lag, 3))

    def _guard(self, thread_id: int) -> None:
        reported_beat = 0.0
        while not self._stop.wait(0.01):
            beat = self._beat
            if beat and beat != reported_beat and time.monotonic() - beat > self.report_after:
                frame = sys._current_frames().get(thread_id)
                if frame is not None and len(self.stacks) < 5:
                    self.stacks.append("".join(traceback.format_stack(frame)[-12:]))
                reported_beat = beat

    def take(self) -> float:
        """The worst lag since the last take (or the start), and start afresh."""
        worst, self.worst = self.worst, 0.0
        self.overall = max(self.overall, worst)
        return worst

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._watch())
        self._watchdog = threading.Thread(
            target=self._guard, args=(threading.get_ident(),), daemon=True
        )
        self._watchdog.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._watchdog is not None:
            self._watchdog.join(timeout=1)
