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


class Jobs:
    """The scheduler (apscheduler, loaded only when the jobs start: after the bot is ready)."""

    def __init__(self) -> None:
        self._scheduler: Any = None
        self._planned: list[tuple[str, float, Callable[[], Awaitable[None]]]] = []
        self.runs: dict[str, int] = {}

    def every(self, name: str, seconds: float, job: Job, *, quiet: bool = False) -> None:
        """Run `job` now and then every `seconds`; `quiet` jobs log start and end at debug level."""

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

        self._planned.append((name, seconds, run))

    def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(timezone=UTC)
        for name, seconds, run in self._planned:
            self._scheduler.add_job(
                run, "interval", seconds=seconds, id=name, max_instances=1, coalesce=True,
                next_run_time=datetime.now(UTC),
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
    jobs.every("announcements", announcement_poll_s,
               lambda: post_due_announcements(announcements, moderation), quiet=True)  # fmt: skip
    jobs.every("purge_login_links", 3600, login_links.purge)
    if reminder_after:
        jobs.every(
            "newcomer_reminders",
            600,
            lambda: remind_newcomers(welcome, reminder_after, send_login_link),
        )
    jobs.every("history_retention", 86400, lambda: chat.purge_older_than(retention_days))
    jobs.every(
        "forget_old_claims", 86400, lambda: ledger.forget_before(utcnow() - timedelta(days=30))
    )
    jobs.every("outbox_upkeep", 3600, lambda: outbox_upkeep(outbox))
    if identity_sync is not None and identity_sync.interval > timedelta(0):
        # Often enough that each binding is read within its jittered interval, in small runs.
        tick = min(max(identity_sync.interval.total_seconds() / 6, 30), 600)
        jobs.every("identity_resync", tick, identity_sync.resync_due)


async def outbox_upkeep(outbox: Outbox) -> dict[str, int]:
    return {"expired": await outbox.expire_stale(), "purged": await outbox.purge_delivered()}
