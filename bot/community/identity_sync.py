"""Roles and group-gated rooms that follow the identity provider between logins: every linked
member's groups are read again (with the refresh token kept at login) on a schedule and on demand.

What a resync does to one binding:
- the provider answers with groups: they are stored, the role follows (unless set with !role),
  and a changed group or role brings the member's group-gated rooms up to date;
- the provider refuses the token (account disabled or deleted, consent withdrawn): the binding is
  stale, it gives no role and no groups any more, the member and the admin room are told, and the
  member can `!login` again;
- the provider cannot answer (down, a malformed answer): nothing changes, it is tried next time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Protocol

import structlog
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.community.audit import add_entry
from bot.community.identity import SSO, GroupRoles, settle_role
from bot.community.markdown import escape_markdown
from bot.community.outbox import ACCESS, SYSTEM_ACTOR, enqueue
from bot.community.roles import Role
from bot.keyed_lock import KeyedLock
from bot.store.database import Database
from bot.store.models import Identity, User, utcnow
from bot.store.sealed_tokens import SealedTokens

log = structlog.get_logger(__name__)

BATCH = 20  # bindings per batch
CONCURRENCY = 4  # refreshes in flight at once
BATCH_PAUSE_S = 1.0  # between batches
JITTER = 0.1  # a binding is due between 90% and 100% of the interval after its last read


class Revoked(Exception):
    """The provider refused the member's token: it no longer vouches for them."""


@dataclass(frozen=True)
class FreshGroups:
    groups: tuple[str, ...]
    refresh_token: str | None = None  # a rotated token replaces the kept one
    subject: str | None = None  # whom the provider answered for, when it says (an ID token)


class GroupSource(Protocol):
    """One provider, as a resync sees it."""

    id: str

    async def fresh_groups(self, refresh_token: str) -> FreshGroups:
        """Raises Revoked when the provider refuses the token; anything else is a failure to
        answer, tried again next time."""
        ...


class Status(Enum):
    UNCHANGED = "unchanged"
    CHANGED = "changed"  # groups or role
    STALE = "stale"  # the provider refused: marked stale now
    ALREADY_STALE = "already stale"  # waits for the member to log in again
    FAILED = "failed"  # the provider did not answer usably: tried again next time
    # None kept (no offline access, linked before, the key changed): read at the next login.
    NO_TOKEN = "no token"  # noqa: S105 (a status, not a secret)
    NO_PROVIDER = "provider gone"  # the provider is no longer configured
    SUPERSEDED = "superseded"  # the member logged in again meanwhile: that login counts


@dataclass(frozen=True)
class Outcome:
    mxid: str
    provider_id: str
    status: Status
    role_change: tuple[Role, Role] | None = None
    problem: str | None = None  # for FAILED: what went wrong (never a token)


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(o.status is status for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        return {s.value: n for s in Status if (n := self.count(s))}


def _jitter(binding_id: int) -> float:
    """A fixed fraction in [0, 1) per binding: members linked at one moment spread out."""
    return (binding_id * 2654435761 % 4096) / 4096


def role_change_message(provider: str, before: Role, after: Role) -> str:
    return (
        f"Your role is now **{after.label}** (was {before.label}): your groups at "
        f"**{escape_markdown(provider)}** changed."
    )


def stale_member_message(provider: str, label: str, login_command: str) -> str:
    return (
        f"**{escape_markdown(provider)}** no longer confirms your account "
        f"**{escape_markdown(label)}**, so it gives you no role or rooms here any more. If that "
        f"is a mistake, send `{login_command}` to link again."
    )


def stale_admin_message(
    provider: str, mxid: str, label: str, change: tuple[Role, Role] | None, login_command: str
) -> str:
    role = f" Role {change[0].label} → {change[1].label}." if change else ""
    return (
        f"**{escape_markdown(provider)}** no longer confirms the account "
        f"**{escape_markdown(label)}** of {escape_markdown(mxid)} (refresh refused): the link is "
        f"marked stale.{role} They can link again with `{login_command}`."
    )


class IdentitySync:
    """Reads linked members' groups again from their providers and lets role and rooms follow."""

    def __init__(
        self,
        db: Database,
        sources: Mapping[str, GroupSource],
        tokens: SealedTokens,
        *,
        group_roles: Mapping[str, GroupRoles],
        bootstrap_admins: Iterable[str],
        provider_names: Mapping[str, str] | None = None,
        admin_room: str | None = None,
        rooms_by_group: bool = False,
        interval: timedelta = timedelta(hours=1),
        login_command: str = "!login",
        batch: int = BATCH,
        concurrency: int = CONCURRENCY,
        batch_pause_s: float = BATCH_PAUSE_S,
    ) -> None:
        self._db = db
        self._sources = sources
        self._tokens = tokens
        self._group_roles = group_roles
        self._admins = frozenset(bootstrap_admins)
        self._names = provider_names or {}
        self._admin_room = admin_room
        self._rooms_by_group = rooms_by_group
        self.interval = interval
        self._login_command = login_command
        self._batch, self._concurrency, self._pause = batch, concurrency, batch_pause_s
        self._locks: KeyedLock[int] = KeyedLock()  # one refresh per binding at a time
        self._full_run: asyncio.Task[Summary] | None = None

    # -- entry points ----------------------------------------------------------------------

    async def resync_member(self, mxid: str, *, actor: str) -> list[Outcome]:
        async with self._db.transaction() as session:
            ids = list(await session.scalars(
                select(Identity.id).where(Identity.mxid == mxid).order_by(Identity.id)
            ))  # fmt: skip
        return [await self._sync(binding_id, actor) for binding_id in ids]

    async def resync_due(self) -> dict[str, int]:
        """The scheduled run: bindings last read more than about `interval` ago."""
        if self.interval <= timedelta(0) or self.full_run_active:
            return {}
        now = utcnow()
        earliest = now - self.interval * (1 - JITTER)
        async with self._db.transaction() as session:
            rows = (await session.execute(
                select(Identity.id, Identity.synced_at)
                .where(Identity.refresh_token.is_not(None), Identity.stale_at.is_(None),
                       Identity.provider.in_(list(self._sources)),
                       or_(Identity.synced_at.is_(None), Identity.synced_at <= earliest))
                .order_by(Identity.synced_at, Identity.id)
            )).all()  # fmt: skip
        due = [
            binding_id for binding_id, synced_at in rows
            if synced_at is None or synced_at <= now - self.interval * (1 - JITTER * _jitter(binding_id))
        ]  # fmt: skip
        return (await self._run(due, SYSTEM_ACTOR)).counts()

    @property
    def full_run_active(self) -> bool:
        return self._full_run is not None and not self._full_run.done()

    async def linked_count(self) -> int:
        async with self._db.transaction() as session:
            return await session.scalar(select(func.count()).select_from(Identity)) or 0

    def start_full_run(self, *, actor: str, report_room: str | None) -> bool:
        """Resync every binding in the background (batches, paced); the summary goes to
        `report_room` when done. False when one is already running."""
        if self.full_run_active:
            return False
        self._full_run = asyncio.create_task(self._full(actor, report_room))
        return True

    async def wait_full_run(self) -> Summary | None:
        return await self._full_run if self._full_run is not None else None

    async def stop(self) -> None:
        if self._full_run is not None and not self._full_run.done():
            self._full_run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._full_run

    # -- the work --------------------------------------------------------------------------

    async def _full(self, actor: str, report_room: str | None) -> Summary:
        async with self._db.transaction() as session:
            ids = list(await session.scalars(select(Identity.id).order_by(Identity.id)))
        try:
            summary = await self._run(ids, actor)
        except Exception:
            log.exception("identity.resync_all_failed")
            if report_room is not None:
                await self._notify(
                    room_id=report_room, body="The resync of all members failed; see the bot's log."
                )
            raise
        log.info("identity.resync_all_done", actor=actor, **summary.counts())
        if report_room is not None:
            await self._notify(room_id=report_room, body=summary_message(summary))
        return summary

    async def _run(self, ids: list[int], actor: str) -> Summary:
        """In batches of `batch`, `concurrency` at a time, pausing between batches: a provider
        sees a steady trickle, never the whole community at once."""
        summary = Summary()
        gate = asyncio.Semaphore(self._concurrency)

        async def one(binding_id: int) -> None:
            async with gate:
                try:
                    summary.outcomes.append(await self._sync(binding_id, actor))
                except Exception:  # the database, a bug: this member, not the others
                    log.exception("identity.resync_error", binding=binding_id)

        for start in range(0, len(ids), self._batch):
            if start:
                await asyncio.sleep(self._pause)
            await asyncio.gather(*(one(i) for i in ids[start : start + self._batch]))
        return summary

    async def _sync(self, binding_id: int, actor: str) -> Outcome:
        async with self._locks(binding_id):
            async with self._db.transaction() as session:
                row = await session.get(Identity, binding_id)
                if row is None:
                    return Outcome("", "", Status.SUPERSEDED)
                mxid, provider, subject = row.mxid, row.provider, row.subject
                sealed, stale = row.refresh_token, row.stale_at is not None
            if stale:
                return Outcome(mxid, provider, Status.ALREADY_STALE)
            source = self._sources.get(provider)
            if source is None:
                return Outcome(mxid, provider, Status.NO_PROVIDER)
            token = self._tokens.open(sealed) if sealed else None
            if token is None:
                return Outcome(mxid, provider, Status.NO_TOKEN)
            try:
                fresh = await source.fresh_groups(token)
            except Revoked as refused:
                return await self._mark_stale(binding_id, sealed, str(refused), actor)
            except Exception as problem:
                log.warning("identity.resync_failed", provider=provider, mxid=mxid,
                            error=str(problem)[:300])  # fmt: skip
                return Outcome(mxid, provider, Status.FAILED, problem=str(problem)[:300])
            if fresh.subject is not None and fresh.subject != subject:
                log.warning("identity.resync_wrong_subject", provider=provider, mxid=mxid)
                return Outcome(mxid, provider, Status.FAILED,
                               problem="the provider answered for another account")  # fmt: skip
            return await self._store(binding_id, sealed, fresh, actor)

    async def _store(
        self, binding_id: int, sealed: str | None, fresh: FreshGroups, actor: str
    ) -> Outcome:
        async with self._db.transaction() as session:
            row = await session.get(Identity, binding_id)
            if row is None or row.refresh_token != sealed:
                return Outcome(
                    row.mxid if row else "", row.provider if row else "", Status.SUPERSEDED
                )
            before_groups = tuple(row.groups or ())
            row.groups = list(fresh.groups)
            row.synced_at = utcnow()
            if fresh.refresh_token is not None:
                row.refresh_token = self._tokens.seal(fresh.refresh_token)
            user = await self._user(session, row.mxid)
            before = Role.parse(user.role)
            after = await settle_role(session, user, self._admins, self._group_roles)
            change = (before, after) if after is not before else None
            added = sorted(set(fresh.groups) - set(before_groups))
            removed = sorted(set(before_groups) - set(fresh.groups))
            if not (added or removed or change):
                return Outcome(row.mxid, row.provider, Status.UNCHANGED)
            detail: dict[str, object] = {
                "provider": row.provider,
                "added": added,
                "removed": removed,
            }
            if change:
                detail["role"] = [before.label, after.label]
                enqueue(session, role_change_message(self._name(row.provider), before, after),
                        recipient=row.mxid)  # fmt: skip
            add_entry(session, actor=actor, action="identity.sync", target=row.mxid, detail=detail)
            if self._rooms_by_group:
                enqueue(session, "", recipient=row.mxid, kind=ACCESS)
            log.info("identity.synced", provider=row.provider, mxid=row.mxid,
                     role=after.label, groups_added=len(added), groups_removed=len(removed))  # fmt: skip
            return Outcome(row.mxid, row.provider, Status.CHANGED, change)

    async def _mark_stale(
        self, binding_id: int, sealed: str | None, reason: str, actor: str
    ) -> Outcome:
        async with self._db.transaction() as session:
            row = await session.get(Identity, binding_id)
            if row is None or row.refresh_token != sealed:  # logged in again meanwhile
                return Outcome(
                    row.mxid if row else "", row.provider if row else "", Status.SUPERSEDED
                )
            row.stale_at = utcnow()
            row.refresh_token = None  # refused: no use keeping it
            user = await self._user(session, row.mxid)
            before = Role.parse(user.role)
            after = await settle_role(session, user, self._admins, self._group_roles)
            change = (before, after) if after is not before else None
            label = row.username or row.email or row.subject
            add_entry(session, actor=actor, action="identity.stale", target=row.mxid, detail={
                "provider": row.provider, "reason": reason[:100],
                "role": [before.label, after.label],
            })  # fmt: skip
            name = self._name(row.provider)
            enqueue(
                session, stale_member_message(name, label, self._login_command), recipient=row.mxid
            )
            if self._admin_room is not None:
                enqueue(
                    session,
                    stale_admin_message(name, row.mxid, label, change, self._login_command),
                    room_id=self._admin_room,
                )
            if self._rooms_by_group:
                enqueue(session, "", recipient=row.mxid, kind=ACCESS)
            log.info("identity.stale", provider=row.provider, mxid=row.mxid, role=after.label)
            return Outcome(row.mxid, row.provider, Status.STALE, change)

    async def _user(self, session: AsyncSession, mxid: str) -> User:
        user = await session.get(User, mxid)
        if user is None:
            user = User(mxid=mxid, role=Role.USER.label, active=True, role_source=SSO)
            session.add(user)
        return user

    async def _notify(self, *, room_id: str, body: str) -> None:
        async with self._db.transaction() as session:
            enqueue(session, body, room_id=room_id)

    def _name(self, provider_id: str) -> str:
        return self._names.get(provider_id, provider_id)


SHOWN = 20


def outcome_text(outcome: Outcome) -> str:
    if outcome.status is Status.CHANGED:
        if outcome.role_change is None:
            return "groups changed, role unchanged"
        before, after = outcome.role_change
        return f"role {before.label} → **{after.label}**"
    if outcome.status is Status.STALE:
        return "the provider refused: the link is marked **stale**"
    if outcome.status is Status.FAILED:
        problem = escape_markdown(outcome.problem or "")
        return f"the provider did not answer usably ({problem}); tried again next time"
    return {
        Status.UNCHANGED: "groups and role unchanged",
        Status.NO_TOKEN: "no refresh token kept (the provider gave none, or the key changed): "
        "the groups are read again at the next login",
        Status.NO_PROVIDER: "that provider is no longer configured",
        Status.ALREADY_STALE: "already stale: waits for the member to log in again",
        Status.SUPERSEDED: "logged in again meanwhile: that login counts",
    }[outcome.status]


def describe_outcome(outcome: Outcome) -> str:
    return f"{escape_markdown(outcome.mxid)}: {outcome_text(outcome)}"


def summary_message(summary: Summary) -> str:
    counts = (
        ", ".join(f"{n} {status}" for status, n in summary.counts().items()) or "no linked members"
    )
    notable = [
        o for o in summary.outcomes if o.status in (Status.CHANGED, Status.STALE, Status.FAILED)
    ]
    lines = [f"Resync of all linked members done: {counts}."]
    lines += [f"- {describe_outcome(o)}" for o in notable[:SHOWN]]
    if len(notable) > SHOWN:
        lines.append(f"- …and {len(notable) - SHOWN} more (see the audit log)")
    return "\n".join(lines)
