"""Periodic work, on apscheduler in the bot's own event loop: post due announcements, purge old
login links, remind unlinked newcomers, apply the history retention, forget old event claims,
expire undeliverable outbox messages and purge delivered ones.
Each job logs its start and end; a job that fails is logged and tried again next time, and never
takes the bot down."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from bot.community.announcements import EVERY_ROOM, Announcements
from bot.community.chat import ChatService
from bot.community.identity_sync import IdentitySync
from bot.community.login_links import LoginLinks
from bot.community.moderation import Moderation
from bot.community.outbox import Outbox
from bot.community.welcome import WelcomeService
from bot.store.events import EventLedger
from bot.store.models import utcnow

log = structlog.get_logger(__name__)

Job = Callable[[], Awaitable[object]]
UPKEEP_AFTER_START_S = 30  # the first run of the periodic upkeep, after the start
UPKEEP_SPACING_S = 5  # between the first runs of two upkeep jobs
HANDLED_EVENTS_KEPT = timedelta(days=30)


class Jobs:
    """The scheduler (apscheduler, loaded only when the jobs start: after the bot is ready)."""

    def __init__(self) -> None:
        self._scheduler: Any = None
        self._planned: list[tuple[str, float, float, Callable[[], Awaitable[None]]]] = []
        self.runs: dict[str, int] = {}

    def every(
        self, name: str, seconds: float, job: Job, *, quiet: bool = False, first_after: float = 0.0
    ) -> None:
        """Run `job` `first_after` seconds after the start, then every `seconds`; `quiet` jobs log
        start and end at debug level."""

        async def run() -> None:
            say = log.debug if quiet else log.info
            started = time.monotonic()
            say("job.start", job=name)
            try:
                result = await job()
            except Exception:
                log.exception("job.failed", job=name)
                return
            finally:
                self.runs[name] = self.runs.get(name, 0) + 1
            say(
                "job.end",
                job=name,
                result=result,
                duration_ms=round((time.monotonic() - started) * 1000),
            )

        self._planned.append((name, seconds, first_after, run))

    def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(timezone=UTC)
        now = datetime.now(UTC)
        for name, seconds, first_after, run in self._planned:
            self._scheduler.add_job(
                run, "interval", seconds=seconds, id=name, max_instances=1, coalesce=True,
                next_run_time=now + timedelta(seconds=first_after),
            )  # fmt: skip
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)


async def post_due_announcements(announcements: Announcements, moderation: Moderation) -> int:
    now = utcnow()
    posted = 0
    for item in await announcements.due(now):
        # Marked as run first: after a crash an announcement is missed rather than posted twice.
        await announcements.ran(item.id, now)
        rooms = moderation.actions.community_rooms() if item.target == EVERY_ROOM else [item.target]
        outcomes = await moderation.announce(item.created_by, rooms, item.body)
        for failed in (o for o in outcomes if not o.ok):
            log.warning(
                "announcement.failed", id=item.id, room_id=failed.room_id, error=failed.problem
            )
        log.info("announcement.posted", id=item.id, rooms=sum(o.ok for o in outcomes))
        posted += 1
    return posted


async def remind_newcomers(welcome: WelcomeService, after: timedelta, send_link) -> int:  # type: ignore[no-untyped-def]
    due = await welcome.due_reminders(after)
    for mxid in due:
        await send_link(mxid, reminder=True)
    return len(due)


def schedule_jobs(
    jobs: Jobs,
    *,
    announcements: Announcements,
    moderation: Moderation,
    login_links: LoginLinks,
    welcome: WelcomeService,
    send_login_link,  # type: ignore[no-untyped-def]
    reminder_after: timedelta | None,
    chat: ChatService,
    retention_days: int,
    ledger: EventLedger,
    outbox: Outbox,
    identity_sync: IdentitySync | None = None,
    announcement_poll_s: float = 5.0,
) -> None:
    # Due announcements go out at the first poll; the upkeep waits until the start has settled
    # (the first commands and the first syncs come first), one job after the other.
    jobs.every("announcements", announcement_poll_s,
               lambda: post_due_announcements(announcements, moderation), quiet=True,
               first_after=announcement_poll_s)  # fmt: skip
    upkeep = iter(range(UPKEEP_AFTER_START_S, 10**6, UPKEEP_SPACING_S))
    jobs.every("purge_login_links", 3600, login_links.purge, first_after=next(upkeep))
    if reminder_after:
        jobs.every(
            "newcomer_reminders", 600,
            lambda: remind_newcomers(welcome, reminder_after, send_login_link),
            first_after=next(upkeep),
        )  # fmt: skip
    jobs.every("history_retention", 86400, lambda: chat.purge_older_than(retention_days),
               first_after=next(upkeep))  # fmt: skip
    # Claims only matter while an event can still come back in a sync.
    jobs.every(
        "forget_old_claims", 86400, lambda: ledger.forget_before(utcnow() - HANDLED_EVENTS_KEPT),
        first_after=next(upkeep),
    )  # fmt: skip
    jobs.every("outbox_upkeep", 3600, lambda: outbox_upkeep(outbox), first_after=next(upkeep))
    if identity_sync is not None and identity_sync.interval > timedelta(0):
        # Often enough that each binding is read within its jittered interval, in small runs.
        tick = min(max(identity_sync.interval.total_seconds() / 6, 30), 600)
        jobs.every("identity_resync", tick, identity_sync.resync_due, first_after=next(upkeep))


async def outbox_upkeep(outbox: Outbox) -> dict[str, int]:
    return {"expired": await outbox.expire_stale(), "purged": await outbox.purge_delivered()}
