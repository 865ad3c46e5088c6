"""The bot's part of /readyz: logged in, and synced recently. Plain attribute reads, no I/O, so
an orchestrator probing every few seconds costs nothing; the web app adds the database's check."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from nio import AsyncClient

from bot.durations import compact_duration


class MatrixReadiness:
    """A ReadinessProbe (web_callback/health.py). bot/app.py fills in the client once it exists
    and `last_synced` (a time.monotonic() value, None before the first sync) once the sync loop
    does: until then the bot is not ready."""

    def __init__(
        self, max_sync_age: timedelta, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client: AsyncClient | None = None
        self._max_age_s = max_sync_age.total_seconds()
        self._limit = compact_duration(max_sync_age)
        self._clock = clock
        self.last_synced: Callable[[], float | None] = lambda: None  # set once the sync runs
        # Active/standby: a standby serves the web app (login links, the SSO callback) while
        # another process leads, so it is ready when its database answers.
        self.standby: Callable[[], bool] = lambda: False

    def __call__(self) -> dict[str, str | None]:
        if self.standby():
            return {"standby": None}
        return {"matrix_login": self._login(), "sync": self._sync()}

    def _login(self) -> str | None:
        client = self.client
        return (
            None if client is not None and client.logged_in else "not logged in to the homeserver"
        )

    def _sync(self) -> str | None:
        last = self.last_synced()
        if last is None:
            return "no sync with the homeserver yet"
        age = self._clock() - last
        if age > self._max_age_s:
            return f"last sync {age:.0f} s ago (allowed: {self._limit})"
        return None
