"""Invite tokens: registration tokens on the homeserver that moderators hand to newcomers.

The homeserver (Synapse's admin API) holds the tokens and counts their uses; the bot records who
made each one and audits every change, in the same transaction. The homeserver is reached through
a small port (`RegistrationTokens`) that bot/matrix/synapse_admin.py implements, so this module
knows nothing of Matrix or HTTP. Tokens made elsewhere (Synapse's admin API, another tool) are
listed and revoked like the bot's own, with their maker unknown."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Protocol

from sqlalchemy import select, update

from bot.community.audit import add_entry
from bot.durations import compact_duration
from bot.store.database import Database
from bot.store.models import InviteToken, utcnow

DEFAULT_USES = 1
MAX_USES = 1_000
DEFAULT_LIFETIME = timedelta(days=7)
MIN_LIFETIME = timedelta(minutes=1)
MAX_LIFETIME = timedelta(days=365)
# What Synapse accepts as a token: its alphabet (RFC 3986 unreserved characters), 1 to 64 long.
TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_IN_CHUNK = 500  # tokens looked up per query (well under every backend's parameter limit)


class InviteTokenError(Exception):
    """It could not be done; `str()` says why, in words for the moderator who asked."""


class TokenUnknown(InviteTokenError):
    """The homeserver has no such token."""


class RegistrationNotByToken(InviteTokenError):
    """The homeserver does not ask newcomers for a token, so one would change nothing."""


class RegistrationMode(Enum):
    """How the homeserver lets people sign up."""

    TOKEN = "token"  # noqa: S105 (not a secret)  only with a registration token
    OPEN = "open"  # at least one way without a token
    CLOSED = "closed"  # registration is disabled
    UNKNOWN = "unknown"  # it did not say


@dataclass(frozen=True)
class RegistrationToken:
    """A token as the homeserver sees it."""

    token: str
    uses_allowed: int | None  # None: unlimited
    pending: int  # registrations under way with it
    completed: int  # accounts made with it
    expires_at: datetime | None  # None: never


class RegistrationTokens(Protocol):
    """The homeserver's registration tokens. Every method raises InviteTokenError (or a subclass)
    with a message fit for a moderator when the homeserver cannot or will not do it."""

    async def create(
        self, *, uses_allowed: int | None, expires_at: datetime | None
    ) -> RegistrationToken: ...
    async def list(self) -> list[RegistrationToken]: ...
    async def get(self, token: str) -> RegistrationToken | None: ...
    async def delete(self, token: str) -> bool:
        """False when the homeserver has no such token."""
        ...

    async def registration_mode(self) -> RegistrationMode: ...


@dataclass(frozen=True)
class InviteTokenInfo:
    """A token: the homeserver's numbers, and who made it (None: not made by the bot)."""

    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expires_at: datetime | None
    created_by: str | None
    created_at: datetime | None

    @property
    def uses_left(self) -> int | None:
        """How many more may register with it; None: no limit. Registrations under way count."""
        if self.uses_allowed is None:
            return None
        return max(0, self.uses_allowed - self.pending - self.completed)

    @property
    def used_up(self) -> bool:
        return self.uses_left == 0

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def usable(self, now: datetime) -> bool:
        return not self.used_up and not self.expired(now)


def token_hint(token: str) -> str:
    """Enough of a token to tell it apart in the audit log, not enough to use it."""
    return f"{token[:4]}…"


def _info(state: RegistrationToken, row: InviteToken | None) -> InviteTokenInfo:
    return InviteTokenInfo(
        token=state.token, uses_allowed=state.uses_allowed, pending=state.pending,
        completed=state.completed, expires_at=state.expires_at,
        created_by=row.created_by if row else None, created_at=row.created_at if row else None,
    )  # fmt: skip


def check_request(uses: int, lifetime: timedelta) -> None:
    if not 1 <= uses <= MAX_USES:
        raise InviteTokenError(f"--uses must be from 1 to {MAX_USES:,}, not {uses:,}.")
    if not MIN_LIFETIME <= lifetime <= MAX_LIFETIME:
        raise InviteTokenError(
            f"--expires must be from {compact_duration(MIN_LIFETIME)} to "
            f"{compact_duration(MAX_LIFETIME)}, not {compact_duration(lifetime)}."
        )


REGISTRATION_CLOSED = (
    "Registration is disabled on the homeserver, so an invite token would let no one in. "
    "Its admin must set `enable_registration: true` and `registration_requires_token: true` "
    "in Synapse's config."
)
REGISTRATION_OPEN = (
    "Anyone can register on the homeserver without a token, so an invite token would change "
    "nothing. Its admin must set `registration_requires_token: true` in Synapse's config."
)


class InviteTokens:
    def __init__(
        self,
        db: Database,
        homeserver: RegistrationTokens,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._homeserver = homeserver
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    async def create(
        self,
        actor: str,
        uses: int = DEFAULT_USES,
        expires: timedelta = DEFAULT_LIFETIME,
        *,
        room_id: str | None = None,
    ) -> InviteTokenInfo:
        """A new token for `uses` registrations within `expires`, recorded as `actor`'s."""
        check_request(uses, expires)
        mode = await self._homeserver.registration_mode()
        if mode is RegistrationMode.CLOSED:
            raise RegistrationNotByToken(REGISTRATION_CLOSED)
        if mode is RegistrationMode.OPEN:
            raise RegistrationNotByToken(REGISTRATION_OPEN)
        made = await self._homeserver.create(uses_allowed=uses, expires_at=self.now() + expires)
        try:
            async with self._db.transaction() as session:
                row = InviteToken(
                    token=made.token, created_by=actor, created_at=self.now(),
                    uses_allowed=made.uses_allowed, expires_at=made.expires_at,
                )  # fmt: skip
                session.add(row)
                add_entry(
                    session, actor=actor, action="invite_token.create",
                    target=token_hint(made.token), room_id=room_id,
                    detail={
                        "uses_allowed": made.uses_allowed,
                        "expires_at": made.expires_at.isoformat() if made.expires_at else None,
                    },
                )  # fmt: skip
        except Exception:
            # Unrecorded, the token must not stay usable: nobody would know who made it.
            with contextlib.suppress(Exception):
                await self._homeserver.delete(made.token)
            raise
        return _info(made, row)

    async def list(self) -> list[InviteTokenInfo]:
        """Every token the homeserver holds, usable ones first (soonest to expire first)."""
        states = await self._homeserver.list()
        rows = await self._rows(s.token for s in states)
        now = self.now()
        infos = [_info(s, rows.get(s.token)) for s in states]
        far = datetime.max.replace(tzinfo=now.tzinfo)
        return sorted(
            infos,
            key=lambda i: (not i.usable(now), i.expires_at or far, i.created_at or far, i.token),
        )

    async def revoke(
        self, actor: str, token: str, *, room_id: str | None = None
    ) -> InviteTokenInfo:
        """Delete `token` at the homeserver (no one can register with it any more) and record who
        revoked it. TokenUnknown when the homeserver has no such token."""
        if not TOKEN.fullmatch(token):
            raise TokenUnknown(
                "That is not an invite token (those are up to 64 letters, digits and . _ ~ -)."
            )
        state = await self._homeserver.get(token)
        if state is None or not await self._homeserver.delete(token):
            raise TokenUnknown("The homeserver has no such invite token (revoked already?).")
        async with self._db.transaction() as session:
            row = await session.get(InviteToken, token)
            await session.execute(
                update(InviteToken)
                .where(InviteToken.token == token, InviteToken.revoked_at.is_(None))
                .values(revoked_at=self.now(), revoked_by=actor)
            )
            add_entry(
                session, actor=actor, action="invite_token.revoke", target=token_hint(token),
                room_id=room_id,
                detail={"made_by": row.created_by if row else None, "completed": state.completed},
            )  # fmt: skip
        return _info(state, row)

    async def _rows(self, tokens: Iterable[str]) -> dict[str, InviteToken]:
        wanted: Sequence[str] = list(tokens)
        found: dict[str, InviteToken] = {}
        async with self._db.transaction() as session:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                for row in await session.scalars(
                    select(InviteToken).where(InviteToken.token.in_(chunk))
                ):
                    found[row.token] = row
        return found
