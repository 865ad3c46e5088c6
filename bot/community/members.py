"""Administering members: finding them, their details, roles, deactivation, forgetting them, and
the community's numbers. Every change is audited in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update

from bot.community.audit import add_entry
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


@dataclass(frozen=True)
class MemberRow:
    mxid: str
    role: Role
    active: bool
    username: str | None
    email: str | None
    created_at: datetime | None
    last_seen_at: datetime | None


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


class MemberAdmin:
    def __init__(self, db: Database, bootstrap_admins: Iterable[str], bot_user_id: str) -> None:
        self._db = db
        self._admins = frozenset(bootstrap_admins)
        self._bot = bot_user_id

    def _role(self, user: User | None, mxid: str) -> Role:
        if mxid in self._admins:
            return Role.ADMIN
        return Role.parse(user.role) if user else Role.USER

    async def search(
        self, query: str | None, page: int, per_page: int = 20
    ) -> tuple[list[MemberRow], int]:
        """Members whose MXID, SSO username or email contains `query`; page is 1-based."""
        async with self._db.transaction() as session:
            stmt = select(User, Identity).outerjoin(Identity, Identity.mxid == User.mxid)
            if query:
                like = f"%{query.lower()}%"
                stmt = stmt.where(
                    or_(
                        func.lower(User.mxid).like(like),
                        func.lower(Identity.username).like(like),
                        func.lower(Identity.email).like(like),
                    )
                )
            total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
            rows = await session.execute(
                stmt.order_by(User.mxid).offset((page - 1) * per_page).limit(per_page)
            )
            members = [
                MemberRow(u.mxid, self._role(u, u.mxid), u.active, i.username if i else None,
                          i.email if i else None, u.created_at, u.last_seen_at)
                for u, i in rows
            ]  # fmt: skip
            return members, total or 0

    async def details(self, mxid: str) -> MemberRow:
        async with self._db.transaction() as session:
            user = await session.get(User, mxid)
            identity = await session.scalar(select(Identity).where(Identity.mxid == mxid).limit(1))
        return MemberRow(
            mxid, self._role(user, mxid), user.active if user else True,
            identity.username if identity else None, identity.email if identity else None,
            user.created_at if user else None, user.last_seen_at if user else None,
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
            add_entry(session, actor=actor.mxid, action="role", target=target, room_id=room_id,
                      detail={"from": party.role.label, "to": new_role.label})  # fmt: skip
            return party.role

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
