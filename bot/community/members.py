"""Administering members: finding them, their details, roles, deactivation, forgetting them, and
the community's numbers. Every change is audited in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    bindparam,
    case,
    delete,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    union,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.community.audit import add_entry
from bot.community.identity import MANUAL, SSO, GroupRoles, role_from_bindings, settle_role
from bot.community.outbox import ACCESS, enqueue
from bot.community.permissions import Party, Refused, check_role_change, check_target
from bot.community.roles import Role
from bot.store.chat import delete_turn
from bot.store.database import Database
from bot.store.models import (
    AuditEntry,
    ChatMessage,
    Conversation,
    DirectRoom,
    GptUsage,
    Identity,
    LoginLink,
    Newcomer,
    OutboxMessage,
    User,
    Welcomed,
    utcnow,
)
from bot.store.types import CleanText, clean_text


@dataclass(frozen=True)
class MemberRow:
    mxid: str
    role: Role
    active: bool
    username: str | None
    email: str | None
    created_at: datetime | None
    last_seen_at: datetime | None
    role_source: str = SSO  # "manual": set with !role, which SSO never undoes


@dataclass(frozen=True)
class ForgetPreview:
    bindings: int
    messages: int
    usage_days: int

    @property
    def empty(self) -> bool:
        return not (self.bindings or self.messages or self.usage_days)


@dataclass(frozen=True)
class Stats:
    members: int
    linked: int
    active_today: int
    gpt_tokens_today: int


# The whole list and queries too short for a trigram are counted exactly up to this many members;
# beyond, the answer says "more than" (the count stops there). For 3+ characters the trigram
# scans deliver every match anyway: counted exactly in the same pass as the page, at what the
# matches cost (about 8 ms for 2,000 of 100,000 members, ~0.2 s when nearly all match).
COUNT_LIMIT = 10_000
# A trigram index (PostgreSQL, revision 0007_member_search) serves queries this long or longer.
TRIGRAM = 3
MAX_OFFSET = 2**31  # --page beyond this shows nothing (SQLite's OFFSET is a 64-bit integer)


@dataclass(frozen=True)
class MemberPage:
    rows: list[MemberRow]
    total: int  # members matched: exact, or COUNT_LIMIT when `more`
    more: bool  # more than COUNT_LIMIT matched
    offset: int | None  # matches before rows[0]; None when unknown (--after past COUNT_LIMIT)
    next_after: str | None  # the MXID the next page starts after, when there is a next page


def _like(column: ColumnElement[str | None], pattern: ColumnElement[str]) -> ColumnElement[bool]:
    """lower(column) LIKE lower(pattern): the form the trigram indexes are built on. Both sides
    are lowered by the database, so its idea of lower case (SQLite's: ASCII only) is applied
    alike to what is searched and what is stored."""
    return func.lower(column).like(func.lower(pattern), escape="\\")


def _matching(query: str, *, after: str | None = None) -> Select[tuple[str]] | CompoundSelect:
    """A query of one column, `mxid`: the members matching `query` (all if empty), after `after`.

    Every member with an SSO binding has a `users` row (linking makes one, forgetting keeps it),
    so both forms below find the same members."""

    def later(column: ColumnElement[str]) -> list[ColumnElement[bool]]:
        return [] if after is None else [column > after]

    if not query:
        return select(User.mxid).where(*later(User.mxid))
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = bindparam("pattern", f"%{escaped}%", type_=CleanText())
    by_binding = or_(_like(Identity.username, pattern), _like(Identity.email, pattern))
    if len(query) >= TRIGRAM:
        # One predicate per branch, so that each can use its trigram index (bitmap scans,
        # OR-ed within identities); the union removes duplicates.
        return union(
            select(User.mxid).where(_like(User.mxid, pattern), *later(User.mxid)),
            select(Identity.mxid).where(by_binding, *later(Identity.mxid)),
        )
    # Too short for a trigram: one pass over the members in MXID order (bindings looked up in a
    # hash of the matching ones), which stops as soon as the page or the count's limit is full;
    # when few match it reads them all (0.1-0.2 s at 100,000 members).
    return select(User.mxid).where(
        or_(_like(User.mxid, pattern), User.mxid.in_(select(Identity.mxid).where(by_binding))),
        *later(User.mxid),
    )


MXID = literal_column("mxid")  # the one column of _matching's queries


async def _count(session: AsyncSession, query: str, after: str | None) -> tuple[int, bool, int]:
    """How many members match (exact up to COUNT_LIMIT: then the count stops, and says more),
    and how many of those sort up to `after`: one pass."""
    counted = _matching(query).limit(COUNT_LIMIT + 1).subquery()
    up_to_after = (
        literal(0) if after is None
        else func.coalesce(func.sum(case((counted.c.mxid <= after, 1), else_=0)), 0)
    )  # fmt: skip
    found, before = (
        await session.execute(select(func.count(), up_to_after).select_from(counted))
    ).one()
    return min(found, COUNT_LIMIT), found > COUNT_LIMIT, before


# What a page query found: (matches, more than COUNT_LIMIT?, matches before the page's first row
# or None when unknown, up to per_page + 1 MXIDs: one more than shown tells there is a next page).
Found = tuple[int, bool, int | None, list[str]]


async def _indexed_page(
    session: AsyncSession, query: str, page: int, per_page: int, after: str | None
) -> Found:
    """3+ characters: the trigram scans deliver every match anyway, so one pass over them gives
    the page, the exact count and, with `after`, how many matches come before it."""
    hits = _matching(query).subquery()
    before = (
        literal(0) if after is None
        else func.sum(case((hits.c.mxid <= after, 1), else_=0)).over()
    )  # fmt: skip
    counted = select(
        hits.c.mxid, func.count().over().label("found"), before.label("before")
    ).subquery()
    stmt = select(counted).order_by(counted.c.mxid).limit(per_page + 1)
    offset = (page - 1) * per_page
    rows: list[Any] = []
    if after is not None:
        # Filtered outside the counting subquery: the window functions see every match.
        rows = list(await session.execute(stmt.where(counted.c.mxid > after)))
    elif offset <= MAX_OFFSET:
        rows = list(await session.execute(stmt.offset(offset)))
    if not rows and after is None and offset == 0:
        return 0, False, 0, []
    if not rows:  # past the end: the count alone
        found, more, ahead = await _count(session, query, after)
        return found, more, offset if after is None else None if more else ahead, []
    first = rows[0]
    return first.found, False, offset if after is None else first.before, [r.mxid for r in rows]


async def _scanned_page(
    session: AsyncSession, query: str, page: int, per_page: int, after: str | None
) -> Found:
    """The whole list, or a query too short for a trigram: scans in MXID order that stop once
    the page is full, and a count that stops at COUNT_LIMIT, asked only when needed."""
    mxids: list[str] = []
    if after is not None:
        found, more, ahead = await _count(session, query, after)
        offset = None if more else ahead  # beyond the limit, where it lies is unknown
        if found and (offset is None or offset < found):
            stmt = _matching(query, after=after).order_by(MXID).limit(per_page + 1)
            mxids = list(await session.scalars(stmt))
        return found, more, offset, mxids
    offset = (page - 1) * per_page
    if offset <= MAX_OFFSET:
        stmt = _matching(query).order_by(MXID).offset(offset).limit(per_page + 1)
        mxids = list(await session.scalars(stmt))
    if len(mxids) <= per_page and (mxids or offset == 0):
        return offset + len(mxids), False, offset, mxids  # the last page: nothing to count
    found, more, _ = await _count(session, query, None)
    return found, more, offset, mxids


def _shown_binding(bindings: list[Identity], query: str) -> Identity | None:
    """The binding to show for a member: one that matches the query, else the oldest."""
    needle = query.casefold()
    for identity in bindings:
        if needle and any(
            needle in (v or "").casefold() for v in (identity.username, identity.email)
        ):
            return identity
    return bindings[0] if bindings else None


class MemberAdmin:
    def __init__(
        self,
        db: Database,
        bootstrap_admins: Iterable[str],
        bot_user_id: str,
        *,
        group_roles: Mapping[str, GroupRoles] | None = None,
        rooms_by_group: bool = False,
    ) -> None:
        self._db = db
        self._admins = frozenset(bootstrap_admins)
        self._bot = bot_user_id
        self._group_roles = group_roles or {}
        self._rooms_by_group = rooms_by_group  # a role change brings role-gated rooms up to date

    @property
    def configured_admins(self) -> frozenset[str]:
        return self._admins

    def _role(self, user: User | None, mxid: str) -> Role:
        if mxid in self._admins:
            return Role.ADMIN
        return Role.parse(user.role) if user else Role.USER

    async def search(
        self, query: str | None, page: int = 1, per_page: int = 20, *, after: str | None = None
    ) -> MemberPage:
        """Members whose MXID, SSO username or email contains `query` (case-insensitive; `%` and
        `_` are literal), in MXID order: page `page` (1-based), or with `after` the page after
        that MXID (keyset paging: as cheap on the hundredth page as on the first)."""
        query = clean_text(query or "")
        async with self._db.transaction() as session:
            if query and session.bind.dialect.name == "postgresql":
                # Planned for this query's own pattern, each time: a generic plan (which
                # PostgreSQL may switch a prepared statement to) cannot pick its plan by how
                # many members the pattern matches, and evaluates lower(pattern) row by row.
                await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            page_of = _indexed_page if len(query) >= TRIGRAM else _scanned_page
            found, more, offset, mxids = await page_of(session, query, page, per_page, after)
            rows = await self._rows(session, mxids[:per_page], query)
        next_after = rows[-1].mxid if len(mxids) > per_page else None
        return MemberPage(rows, found, more, offset, next_after)

    async def _rows(self, session: AsyncSession, mxids: list[str], query: str) -> list[MemberRow]:
        if not mxids:
            return []
        users = {u.mxid: u for u in await session.scalars(select(User).where(User.mxid.in_(mxids)))}
        bindings: dict[str, list[Identity]] = {}
        for identity in await session.scalars(
            select(Identity).where(Identity.mxid.in_(mxids)).order_by(Identity.id)
        ):
            bindings.setdefault(identity.mxid, []).append(identity)
        rows = []
        for mxid in mxids:
            user, identity = users.get(mxid), _shown_binding(bindings.get(mxid, []), query)
            rows.append(MemberRow(
                mxid, self._role(user, mxid), user.active if user else True,
                identity.username if identity else None, identity.email if identity else None,
                user.created_at if user else None, user.last_seen_at if user else None,
            ))  # fmt: skip
        return rows

    async def details(self, mxid: str) -> MemberRow:
        async with self._db.transaction() as session:
            user = await session.get(User, mxid)
            identity = await session.scalar(select(Identity).where(Identity.mxid == mxid).limit(1))
        return MemberRow(
            mxid, self._role(user, mxid), user.active if user else True,
            identity.username if identity else None, identity.email if identity else None,
            user.created_at if user else None, user.last_seen_at if user else None,
            user.role_source if user else SSO,
        )  # fmt: skip

    async def _party(self, session, mxid: str) -> tuple[User, Party]:  # type: ignore[no-untyped-def]
        user = await session.get(User, mxid)
        if user is None:
            user = User(mxid=mxid, role=Role.USER.label, active=True)
            session.add(user)
        return user, Party(mxid, self._role(user, mxid))

    async def set_role(
        self, actor: Party, target: str, new_role: Role, *, room_id: str | None
    ) -> Role:
        """Returns the previous role. Raises Refused."""
        async with self._db.transaction() as session:
            user, party = await self._party(session, target)
            stored = set(
                await session.scalars(select(User.mxid).where(User.role == Role.ADMIN.label))
            )
            check_role_change(
                actor, party, new_role, bot_user_id=self._bot,
                admins_left=len(stored | self._admins), configured_admin=target in self._admins,
            )  # fmt: skip
            user.role = new_role.label
            user.role_source = MANUAL  # an override: logins and resyncs leave it alone
            add_entry(session, actor=actor.mxid, action="role", target=target, room_id=room_id,
                      detail={"from": party.role.label, "to": new_role.label,
                              "source": MANUAL})  # fmt: skip
            self._rooms_follow(session, target, party.role, new_role)
            return party.role

    async def hand_role_to_sso(
        self, actor: Party, target: str, *, room_id: str | None
    ) -> tuple[Role, Role]:
        """Undo a `!role` override: the member's SSO groups decide again. Returns the role
        before and after. Raises Refused (the same checks as setting that role by hand)."""
        async with self._db.transaction() as session:
            user, party = await self._party(session, target)
            if target in self._admins:
                raise Refused(f"{target} is an admin by the bot's configuration ([roles] admins).")
            sso_role = await role_from_bindings(session, target, self._group_roles)
            stored = set(
                await session.scalars(select(User.mxid).where(User.role == Role.ADMIN.label))
            )
            check_role_change(
                actor, party, sso_role, bot_user_id=self._bot,
                admins_left=len(stored | self._admins), configured_admin=False,
            )  # fmt: skip
            user.role_source = SSO
            user.role = (await settle_role(session, user, self._admins, self._group_roles)).label
            add_entry(session, actor=actor.mxid, action="role", target=target, room_id=room_id,
                      detail={"from": party.role.label, "to": sso_role.label,
                              "source": SSO})  # fmt: skip
            self._rooms_follow(session, target, party.role, sso_role)
            return party.role, sso_role

    def _rooms_follow(self, session: AsyncSession, mxid: str, before: Role, after: Role) -> None:
        if self._rooms_by_group and before is not after:
            enqueue(session, "", recipient=mxid, kind=ACCESS)

    async def set_active(
        self, actor: Party, target: str, active: bool, *, reason: str | None, room_id: str | None
    ) -> bool:
        """Returns whether anything changed. Raises Refused."""
        async with self._db.transaction() as session:
            user, party = await self._party(session, target)
            check_target(actor, party, bot_user_id=self._bot,
                         action="deactivate" if not active else "activate")  # fmt: skip
            if not active and target in self._admins:
                raise Refused(f"{target} is an admin by the bot's configuration ([roles] admins).")
            if user.active == active:
                return False
            user.active = active
            add_entry(session, actor=actor.mxid, action="activate" if active else "deactivate",
                      target=target, room_id=room_id, reason=reason)  # fmt: skip
            return True

    async def forget_preview(self, mxid: str) -> ForgetPreview:
        async with self._db.transaction() as session:
            bindings = await session.scalar(
                select(func.count()).select_from(Identity).where(Identity.mxid == mxid)
            )
            messages = await session.scalar(
                select(func.count()).select_from(ChatMessage).where(ChatMessage.author == mxid)
            )
            usage = await session.scalar(
                select(func.count()).select_from(GptUsage).where(GptUsage.mxid == mxid)
            )
        return ForgetPreview(bindings or 0, messages or 0, usage or 0)

    async def forget(self, actor: Party, mxid: str, *, room_id: str | None) -> ForgetPreview:
        """Delete the member's binding, chat history (with the answers they got), usage and
        bookkeeping. The audit log keeps that it happened, not what was deleted."""
        preview = await self.forget_preview(mxid)
        async with self._db.transaction() as session:
            user, party = await self._party(session, mxid)
            check_target(actor, party, bot_user_id=self._bot, action="forget")
            if mxid in self._admins:
                raise Refused(f"{mxid} is an admin by the bot's configuration ([roles] admins).")
            # Conversations only they spoke in (their DM) go whole; elsewhere their turns go, with
            # the answer each got, and any summary that may retell them.
            theirs = select(ChatMessage.conversation_id).where(ChatMessage.author == mxid)
            others = select(ChatMessage.conversation_id).where(
                ChatMessage.author.is_not(None), ChatMessage.author != mxid
            )
            solo = list(await session.scalars(theirs.except_(others)))
            if solo:
                await session.execute(
                    delete(ChatMessage).where(ChatMessage.conversation_id.in_(solo))
                )
                await session.execute(delete(Conversation).where(Conversation.id.in_(solo)))
            turns = list(
                await session.scalars(select(ChatMessage).where(ChatMessage.author == mxid))
            )
            for turn in turns:
                await delete_turn(session, turn)
            shared = {t.conversation_id for t in turns}
            if shared:
                await session.execute(
                    update(Conversation)
                    .where(Conversation.id.in_(shared))
                    .values(summary=None, summary_upto=None)
                )
            for model, column in (
                (Identity, Identity.mxid), (GptUsage, GptUsage.mxid), (LoginLink, LoginLink.mxid),
                (Newcomer, Newcomer.mxid), (Welcomed, Welcomed.mxid), (DirectRoom, DirectRoom.mxid),
                (OutboxMessage, OutboxMessage.recipient),
            ):  # fmt: skip
                await session.execute(delete(model).where(column == mxid))
            # The audit log keeps the facts (who did what to whom, when, where, and the
            # moderator's stated reason) but not the data about them that details carry
            # (usernames, SSO subjects, settings they typed).
            await session.execute(
                update(AuditEntry)
                .where(
                    or_(AuditEntry.target == mxid, AuditEntry.actor == mxid),
                    AuditEntry.detail.is_not(None),
                )
                .values(detail={"scrubbed": "forget"})
            )
            # The member row stays: it carries no personal data beyond the ID, and keeps a
            # deactivation or a role in force. When they were last seen goes.
            user.last_seen_at = None
            add_entry(session, actor=actor.mxid, action="forget", target=mxid, room_id=room_id,
                      detail={"bindings": preview.bindings, "messages": preview.messages})  # fmt: skip
        return preview

    async def stats(self) -> Stats:
        today = utcnow().date()
        start = datetime.combine(today, datetime.min.time(), utcnow().tzinfo)
        async with self._db.transaction() as session:
            members = await session.scalar(select(func.count()).select_from(User))
            linked = await session.scalar(select(func.count(func.distinct(Identity.mxid))))
            active = await session.scalar(
                select(func.count()).select_from(User).where(User.last_seen_at >= start)
            )
            tokens = await session.scalar(
                select(func.sum(GptUsage.prompt_tokens + GptUsage.completion_tokens)).where(
                    GptUsage.day == today
                )
            )
        return Stats(members or 0, linked or 0, active or 0, tokens or 0)
