"""Bindings between SSO identities and Matrix IDs, and the roles that follow from SSO groups."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from bot.community.audit import add_entry
from bot.community.login_links import consume
from bot.community.markdown import escape_markdown
from bot.community.outbox import enqueue
from bot.community.roles import Role
from bot.store.database import Database
from bot.store.models import Identity, User, utcnow


@dataclass(frozen=True)
class VerifiedIdentity:
    """What the web app established at a provider, after every check passed."""

    provider_id: str
    provider_name: str
    issuer: str
    subject: str
    email: str | None = None
    username: str | None = None
    display_name: str | None = None
    groups: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.username or self.email or self.subject


@dataclass(frozen=True)
class GroupRoles:
    """Which SSO groups of one provider make someone an admin or a moderator."""

    admin_groups: tuple[str, ...] = ()
    moderator_groups: tuple[str, ...] = ()

    def role_for(self, groups: Iterable[str]) -> Role:
        member_of = set(groups)
        if member_of & set(self.admin_groups):
            return Role.ADMIN
        if member_of & set(self.moderator_groups):
            return Role.MODERATOR
        return Role.USER


@dataclass(frozen=True)
class Binding:
    provider_id: str
    issuer: str
    subject: str
    mxid: str
    email: str | None
    username: str | None
    display_name: str | None
    groups: tuple[str, ...]
    linked_at: datetime
    last_login_at: datetime


@dataclass(frozen=True)
class BindResult:
    mxid: str
    role: Role
    identity: VerifiedIdentity
    replaced_subject: str | None  # the same provider's previous account of this user, if any


class AlreadyLinkedElsewhere(Exception):
    """This SSO identity belongs to another Matrix ID; it is never moved silently."""

    def __init__(self, other_mxid: str) -> None:
        super().__init__(other_mxid)
        self.other_mxid = other_mxid


def _binding(row: Identity) -> Binding:
    return Binding(
        row.provider, row.issuer, row.subject, row.mxid, row.email, row.username,
        row.display_name, tuple(row.groups or ()), row.linked_at, row.last_login_at,
    )  # fmt: skip


def linked_message(identity: VerifiedIdentity, role: Role) -> str:
    return (
        f"You are now linked as **{escape_markdown(identity.label)}** "
        f"({escape_markdown(identity.provider_name)}), role: {role.label}."
    )


class IdentityService:
    def __init__(self, db: Database, bootstrap_admins: Iterable[str]) -> None:
        self._db = db
        self._admins = frozenset(bootstrap_admins)

    async def bind(
        self, token_hash: str, browser_id: str, identity: VerifiedIdentity, roles: GroupRoles
    ) -> BindResult:
        """Use up the login link and bind the identity to its Matrix ID, in one transaction with
        the role change, the audit entry and the confirmation the bot will deliver."""
        try:
            return await self._bind(token_hash, browser_id, identity, roles)
        except IntegrityError:
            # Another callback bound the same identity at the same moment: say who has it.
            async with self._db.transaction() as session:
                owner = await session.scalar(
                    select(Identity.mxid).where(
                        Identity.issuer == identity.issuer, Identity.subject == identity.subject
                    )
                )
            if owner is None:
                raise
            raise AlreadyLinkedElsewhere(owner) from None

    async def _bind(
        self, token_hash: str, browser_id: str, identity: VerifiedIdentity, roles: GroupRoles
    ) -> BindResult:
        async with self._db.transaction() as session:
            link = await consume(session, token_hash, browser_id)
            mxid = link.mxid
            owner = await session.scalar(
                select(Identity).where(
                    Identity.issuer == identity.issuer, Identity.subject == identity.subject
                )
            )
            if owner is not None and owner.mxid != mxid:
                raise AlreadyLinkedElsewhere(owner.mxid)
            previous = await session.scalar(
                select(Identity).where(
                    Identity.mxid == mxid, Identity.provider == identity.provider_id
                )
            )
            replaced = None
            if previous is not None and previous.subject != identity.subject:
                replaced = previous.subject
                await session.delete(previous)
                await session.flush()
                previous = None
            row = owner or previous or Identity(
                provider=identity.provider_id, issuer=identity.issuer,
                subject=identity.subject, mxid=mxid, linked_at=utcnow(),
            )  # fmt: skip
            row.email = identity.email
            row.username = identity.username
            row.display_name = identity.display_name
            row.groups = list(identity.groups)
            row.last_login_at = utcnow()
            session.add(row)

            role = Role.ADMIN if mxid in self._admins else roles.role_for(identity.groups)
            user = await session.get(User, mxid)
            if user is None:
                session.add(User(mxid=mxid, role=role.label, active=True))
            else:
                user.role = role.label
            add_entry(
                session, actor=mxid, action="identity.link", target=mxid,
                detail={
                    "provider": identity.provider_id, "username": identity.username,
                    "role": role.label, "replaced_subject": replaced,
                },
            )  # fmt: skip
            enqueue(session, linked_message(identity, role), recipient=mxid)
        return BindResult(mxid, role, identity, replaced)

    async def bindings_of(self, mxid: str) -> list[Binding]:
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(Identity).where(Identity.mxid == mxid).order_by(Identity.linked_at)
            )
            return [_binding(r) for r in rows]

    async def unlink(self, mxid: str, *, actor: str) -> list[Binding]:
        """Remove every binding of `mxid`; the role SSO gave goes with it. Returns what was removed."""
        async with self._db.transaction() as session:
            rows = list(await session.scalars(select(Identity).where(Identity.mxid == mxid)))
            if not rows:
                return []
            await session.execute(delete(Identity).where(Identity.mxid == mxid))
            user = await session.get(User, mxid)
            if user is not None and mxid not in self._admins:
                user.role = Role.USER.label
            add_entry(
                session, actor=actor, action="identity.unlink", target=mxid,
                detail={"providers": [r.provider for r in rows]},
            )  # fmt: skip
            return [_binding(r) for r in rows]
