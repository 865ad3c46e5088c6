"""Bindings between SSO identities and Matrix IDs, and the roles that follow from SSO groups.

Who decides a member's role, in this order: `[roles] admins` are admins, always; a role set with
`!role` is the member's until `!role @member sso` hands it back; otherwise the groups their
provider gives (at each login and each resync) decide. A binding the provider no longer confirms
is stale and gives no role."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.community.audit import add_entry
from bot.community.login_links import consume
from bot.community.markdown import escape_markdown
from bot.community.outbox import ACCESS, enqueue
from bot.community.roles import Role
from bot.store.database import Database
from bot.store.models import Identity, LogoutTokenSeen, User, utcnow
from bot.store.sealed_tokens import SealedTokens

if TYPE_CHECKING:
    from bot.config import Config

SSO, MANUAL = "sso", "manual"
LogoutAction = Literal["ignore", "reset_role", "deactivate"]


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
    refresh_token: str | None = None  # to read the groups again later (kept sealed)
    session_id: str | None = None  # the provider's `sid`, for back-channel logout

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
    synced_at: datetime | None = None
    stale: bool = False  # the provider refused to confirm it: the member must log in again


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


class LogoutReplayed(Exception):
    """This back-channel logout token (by its jti) was already acted on: it does nothing again."""


def _binding(row: Identity) -> Binding:
    return Binding(
        row.provider, row.issuer, row.subject, row.mxid, row.email, row.username,
        row.display_name, tuple(row.groups or ()), row.linked_at, row.last_login_at,
        row.synced_at, row.stale_at is not None,
    )  # fmt: skip


async def role_from_bindings(
    session: AsyncSession, mxid: str, group_roles: Mapping[str, GroupRoles]
) -> Role:
    """The highest role the member's confirmed (not stale) bindings' groups give."""
    rows = await session.scalars(
        select(Identity).where(Identity.mxid == mxid, Identity.stale_at.is_(None))
    )
    roles = [group_roles.get(r.provider, GroupRoles()).role_for(r.groups or ()) for r in rows]
    return max(roles, default=Role.USER)


async def settle_role(
    session: AsyncSession, user: User, admins: frozenset[str], group_roles: Mapping[str, GroupRoles]
) -> Role:
    """Set and return the member's role by the precedence above: a configured admin, else a role
    set with !role, else what their confirmed bindings' groups give."""
    if user.mxid in admins:
        role = Role.ADMIN
    elif user.role_source == MANUAL:  # set with !role: logins and resyncs do not undo it
        role = Role.parse(user.role)
    else:
        await session.flush()  # bindings changed in this transaction count
        role = await role_from_bindings(session, user.mxid, group_roles)
    user.role = role.label
    return role


def linked_message(identity: VerifiedIdentity, role: Role) -> str:
    return (
        f"You are now linked as **{escape_markdown(identity.label)}** "
        f"({escape_markdown(identity.provider_name)}), role: {role.label}."
    )


class IdentityService:
    def __init__(
        self,
        db: Database,
        bootstrap_admins: Iterable[str],
        *,
        tokens: SealedTokens | None = None,
        group_roles: Mapping[str, GroupRoles] | None = None,
        rooms_by_group: bool = False,
    ) -> None:
        self._db = db
        self._admins = frozenset(bootstrap_admins)
        self.tokens = tokens
        self.group_roles: Mapping[str, GroupRoles] = group_roles or {}
        self._rooms_by_group = rooms_by_group  # [[access.rooms]] are configured

    @classmethod
    def from_config(cls, cfg: Config, db: Database) -> IdentityService:
        """As the bot and the web app both need it: tokens sealed with `[sso] token_key` (or
        the data dir's key), each provider's groups, whether rooms follow groups."""
        return cls(
            db, cfg.roles.admins,
            tokens=SealedTokens.from_config(
                cfg.sso.token_key.get_secret_value() if cfg.sso.token_key else None, cfg.data.dir
            ),
            group_roles={
                p.id: GroupRoles(p.admin_groups, p.moderator_groups) for p in cfg.sso.providers
            },
            rooms_by_group=bool(cfg.access.rooms),
        )  # fmt: skip

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
            row.last_login_at = row.synced_at = utcnow()
            row.stale_at = None  # logging in again confirms it
            if identity.refresh_token is not None and self.tokens is not None:
                row.refresh_token = self.tokens.seal(identity.refresh_token)
            if identity.session_id is not None:
                row.session_id = identity.session_id
            session.add(row)

            user = await session.get(User, mxid)
            if user is None:
                user = User(mxid=mxid, role=Role.USER.label, active=True, role_source=SSO)
                session.add(user)
            group_roles = {**self.group_roles, identity.provider_id: roles}
            role = await settle_role(session, user, self._admins, group_roles)
            add_entry(
                session, actor=mxid, action="identity.link", target=mxid,
                detail={
                    "provider": identity.provider_id, "username": identity.username,
                    "role": role.label, "replaced_subject": replaced,
                },
            )  # fmt: skip
            enqueue(session, linked_message(identity, role), recipient=mxid)
            if self._rooms_by_group:  # the bot brings their group-gated rooms up to date
                enqueue(session, "", recipient=mxid, kind=ACCESS)
        return BindResult(mxid, role, identity, replaced)

    async def bindings_of(self, mxid: str) -> list[Binding]:
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(Identity).where(Identity.mxid == mxid).order_by(Identity.linked_at)
            )
            return [_binding(r) for r in rows]

    async def logged_out(
        self, issuer: str, subject: str | None, session_id: str | None, action: LogoutAction,
        *, jti: str, jti_kept: timedelta,
    ) -> list[str]:  # fmt: skip
        """The provider ended a session (back-channel logout) of `subject` and/or `session_id`.
        Returns the Matrix IDs it concerned; `action` says what it does to them: nothing (not
        audited), their SSO role back to user (a role set with !role stays), or a deactivation;
        both make the binding stale until the member logs in again, so that a resync (the refresh
        token outlives the session) gives the role back no sooner. The token's `jti` is recorded
        in the same transaction and kept for `jti_kept` (older ones are purged): the same token
        delivered again, even at the same moment, raises LogoutReplayed and changes nothing."""
        async with self._db.transaction() as session:
            now = utcnow()
            session.add(LogoutTokenSeen(jti=jti, issuer=issuer, seen_at=now))
            try:  # the first statement: a simultaneous delivery waits here, then fails
                await session.flush()
            except IntegrityError:
                raise LogoutReplayed(jti) from None
            await session.execute(
                delete(LogoutTokenSeen).where(LogoutTokenSeen.seen_at < now - jti_kept)
            )
            query = select(Identity).where(Identity.issuer == issuer)
            if subject is not None:
                query = query.where(Identity.subject == subject)
            if session_id is not None:
                query = query.where(Identity.session_id == session_id)
            rows = list(await session.scalars(query))
            for row in rows:
                user = await session.get(User, row.mxid)
                detail: dict[str, object] = {"provider": row.provider, "action": action}
                if user is not None and row.mxid not in self._admins:
                    if action == "reset_role" and user.role_source != MANUAL:
                        detail["role"] = [user.role, Role.USER.label]
                        user.role = Role.USER.label
                    elif action == "deactivate":
                        user.active = False
                if action != "ignore":
                    row.stale_at = now
                    add_entry(session, actor=row.provider, action="identity.logout",
                              target=row.mxid, detail=detail)  # fmt: skip
            return sorted({r.mxid for r in rows})

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
