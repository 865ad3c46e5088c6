"""Active/standby: of the `community-bot run` processes sharing one PostgreSQL database, exactly
one is active. It holds a lease row (bot/store/leases.py) that it renews every heartbeat; the
others serve the web app and wait for it to end. A lease row rather than an advisory lock: a lock
lives as long as its connection, and a leader paused (SIGSTOP, a frozen VM, a network partition)
keeps that connection open and believes it still leads; a lease expires on the database's clock
whatever the leader does, and its epoch fences the writes that matter (event claims, the sync
token), checked in the same transaction.

The leader also stops itself: it counts its lease from the moment it asked for it, on the
monotonic clock (which runs on while the process is stopped), and before each claim and each
send checks that this time has not run out. A leader that finds its lease gone exits at once
(as if killed: the store is safe for that), with `leader.lease_lost` in the log and exit status
75, so its supervisor starts it again, as the standby.

With SQLite there is one process: no lease, and the log says so."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from secrets import token_hex
from typing import Any, NoReturn

import structlog
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.store.database import Database
from bot.store.leases import LeaseStore

log = structlog.get_logger(__name__)

EXIT_LEASE_LOST = 75  # EX_TEMPFAIL: "try again later", which the supervisor does
STANDBY_POLL_S = 1.0  # one tiny query a second from the standby


class LeaseLost(Exception):
    """Raised instead of exiting when the lease is lost (tests pass `on_lost` to get it)."""


def exit_now() -> NoReturn:
    """Leave without running anything else: no handler may send, no store may be written."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_LEASE_LOST)


def _end_frozen_transactions(db: Database, seconds: float) -> None:
    """A leader frozen in the middle of a transaction keeps its row locks (on the lease row,
    on an event it was claiming): the standby's take-over would wait on them for as long as the
    freeze lasts. PostgreSQL ends such sessions after `seconds` (this process's transactions
    never wait on anything but the database), rolling their writes back."""
    statement = f"SET idle_in_transaction_session_timeout = {int(seconds * 1000)}"

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()

    event.listen(db.engine.sync_engine, "connect", on_connect)


class LeaderLease:
    def __init__(
        self,
        db: Database,
        name: str,
        *,
        lease: timedelta,
        heartbeat: timedelta,
        on_lost: Callable[[], object] = exit_now,
    ) -> None:
        self.enabled = db.backend == "postgresql"
        self._store = LeaseStore(db, name)
        self._lease_s = lease.total_seconds()
        self._heartbeat_s = heartbeat.total_seconds()
        # Stop trusting the lease a little before the database lets it go.
        self._guard_s = min(1.0, self._lease_s / 10)
        self._on_lost = on_lost
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{token_hex(3)}"
        self.epoch: int | None = None
        self._valid_until = 0.0  # monotonic
        self._lost_it = False
        if self.enabled:
            _end_frozen_transactions(db, self._lease_s)

    # -- becoming the leader -----------------------------------------------------------------

    async def acquire(self) -> None:
        """Return once this process leads (at once with SQLite); meanwhile it is the standby."""
        if not self.enabled:
            log.info("leader.single_instance", reason="SQLite database: one process, no lease")
            return
        waiting_since = time.monotonic()
        seen: tuple[str, int] | None = None
        while True:
            asked = time.monotonic()
            try:
                epoch = await self._store.try_acquire(self.holder, self._lease_s)
                current = None if epoch else await self._store.current()
            except (SQLAlchemyError, OSError) as problem:
                log.warning("leader.database_unreachable", error=type(problem).__name__)
                await asyncio.sleep(self._heartbeat_s)
                continue
            if epoch:
                self.epoch = epoch
                self._valid_until = asked + self._lease_s - self._guard_s
                if time.monotonic() - asked > self._guard_s:  # it waited on a frozen leader's
                    await self._renew()  # locks: count the lease from now, not from asking
                log.info("leader.acquired", holder=self.holder, epoch=epoch,
                         waited_s=round(time.monotonic() - waiting_since, 2))  # fmt: skip
                return
            remaining = current.remaining_s if current else 0.0
            if current and (current.holder, current.epoch) != seen:
                seen = (current.holder, current.epoch)
                log.info("leader.standby", holder=self.holder, leader=current.holder,
                         epoch=current.epoch, expires_in_s=round(remaining, 1))  # fmt: skip
            # Ask again just after the lease would run out, and at least every second (a
            # released lease, on a clean stop, is taken over within a second).
            await asyncio.sleep(min(max(remaining + 0.05, 0.2), STANDBY_POLL_S))

    # -- staying the leader ------------------------------------------------------------------

    @property
    def standby(self) -> bool:
        """Waiting for the lease (another process leads): the web app serves meanwhile."""
        return self.enabled and self.epoch is None and not self._lost_it

    def held(self) -> bool:
        return not self.enabled or time.monotonic() < self._valid_until

    def ensure_held(self, doing: str) -> None:
        """Called before anything only the leader may do; a lapsed lease ends the process."""
        if not self.held():
            self._lost(f"the lease ran out before {doing} (the process was paused or cut off "
                       "from the database for longer than the lease)")  # fmt: skip

    async def fence(self, conn: AsyncConnection) -> None:
        """Inside a write's transaction: the write commits only while our epoch is the lease's."""
        if not self.enabled:
            return
        self.ensure_held("a fenced write")
        assert self.epoch is not None
        if not await self._store.still_held(conn, self.holder, self.epoch):
            self._lost("the database refused a write: this epoch is no longer the lease's")

    async def keep(self) -> None:
        """Renew every heartbeat, for as long as the process runs (a background task)."""
        if not self.enabled:
            await asyncio.Event().wait()
        assert self.epoch is not None
        while True:
            await asyncio.sleep(self._heartbeat_s)
            self.ensure_held("renewing it")
            await self._renew()

    async def _renew(self) -> None:
        assert self.epoch is not None
        asked = time.monotonic()
        try:
            renewed = await self._store.renew(self.holder, self.epoch, self._lease_s)
        except (SQLAlchemyError, OSError) as problem:  # keep trying while the lease lasts
            log.warning("leader.renew_failed", error=type(problem).__name__,
                        valid_for_s=round(self._valid_until - time.monotonic(), 1))  # fmt: skip
            return
        if not renewed:
            self._lost("the lease expired or was taken over")
        self._valid_until = asked + self._lease_s - self._guard_s
        self.ensure_held("renewing it")  # a pause while renewing

    async def release(self) -> None:
        """On a clean stop: the standby may take over at once instead of waiting out the lease."""
        if not self.enabled or self.epoch is None or self._lost_it:
            return
        try:
            await self._store.release(self.holder, self.epoch)
        except (SQLAlchemyError, OSError) as problem:
            log.warning("leader.release_failed", error=type(problem).__name__)
            return
        log.info("leader.released", holder=self.holder, epoch=self.epoch)
        self.epoch = None

    def _lost(self, reason: str) -> NoReturn:
        log.error("leader.lease_lost", holder=self.holder, epoch=self.epoch, reason=reason,
                  action="stopping at once; restarted, this process waits as the standby")  # fmt: skip
        self._valid_until = 0.0
        self._lost_it = True  # nothing to release: it is someone else's now, or nobody's
        self._on_lost()
        raise LeaseLost(reason)
