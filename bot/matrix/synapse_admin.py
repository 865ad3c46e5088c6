"""Synapse's admin API, as far as the bot uses it: registration tokens
(`/_synapse/admin/v1/registration_tokens`), with a server admin's access token (`[synapse]
admin_token`). It implements the domain's RegistrationTokens port (bot/community/invite_tokens.py).

Whatever goes wrong becomes a SynapseAdminError whose message tells a moderator what happened and
who can fix it; the access token and the tokens themselves never appear in messages or logs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from bot.community.invite_tokens import (
    TOKEN,
    InviteTokenError,
    RegistrationMode,
    RegistrationToken,
)
from bot.community.markdown import shorten

log = structlog.get_logger(__name__)

TOKENS_PATH = "/_synapse/admin/v1/registration_tokens"
REGISTER_PATH = "/_matrix/client/v3/register"
TOKEN_STAGE = "m.login.registration_token"  # noqa: S105 (a UIA stage's name)
TIMEOUT_S = 15.0


class SynapseAdminError(InviteTokenError):
    """The admin API did not do it; `str()` is for the moderator who asked."""


class NotServerAdmin(SynapseAdminError):
    """The admin token belongs to an account that is not a server admin."""


class AdminTokenRejected(SynapseAdminError):
    """The homeserver does not know the admin token (logged out, mistyped)."""


class AdminApiUnavailable(SynapseAdminError):
    """No Synapse admin API at the homeserver's URL (not Synapse, or a proxy hides it)."""


class HomeserverUnreachable(SynapseAdminError):
    """No answer at all."""


def _ms_to_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("expiry_time")
    return datetime.fromtimestamp(value / 1000, UTC)


def _count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(name)
    return value


def parse_token(data: Any) -> RegistrationToken:
    """A token object from the admin API; ValueError when it is not one."""
    if not isinstance(data, dict):
        raise ValueError("not an object")
    token = data.get("token")
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise ValueError("token")
    uses = data.get("uses_allowed")
    return RegistrationToken(
        token=token,
        uses_allowed=None if uses is None else _count(uses, "uses_allowed"),
        pending=_count(data.get("pending", 0), "pending"),
        completed=_count(data.get("completed", 0), "completed"),
        expires_at=_ms_to_datetime(data.get("expiry_time")),
    )


class SynapseAdmin:
    """Registration tokens through Synapse's admin API."""

    def __init__(self, homeserver: str, access_token: str, *, timeout_s: float = TIMEOUT_S) -> None:
        self._base = homeserver.rstrip("/")
        self._headers = {"Authorization": f"Bearer {access_token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, admin: bool = True
    ) -> tuple[int, dict[str, Any]]:
        """The status and JSON object of the answer ({} when it has none)."""
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as http,
                http.request(
                    method, f"{self._base}{path}", json=body,
                    headers=self._headers if admin else None,
                ) as response,
            ):  # fmt: skip
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                return response.status, answer if isinstance(answer, dict) else {}
        except (aiohttp.ClientError, TimeoutError, OSError) as problem:
            where = TOKENS_PATH if path.startswith(TOKENS_PATH) else path  # no token in the log
            log.warning("synapse_admin.unreachable", path=where, error=type(problem).__name__)
            raise HomeserverUnreachable(
                "The homeserver did not answer; try again in a moment."
            ) from None

    def _refusal(self, status: int, answer: dict[str, Any]) -> SynapseAdminError:
        """The error for an answer that is not a success."""
        errcode = answer.get("errcode") if isinstance(answer.get("errcode"), str) else None
        said = answer.get("error") if isinstance(answer.get("error"), str) else ""
        said = shorten(said, 200)
        log.warning("synapse_admin.refused", status=status, errcode=errcode, error=said)
        if status == 401 or errcode in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
            return AdminTokenRejected(
                "The homeserver does not accept the bot's `[synapse] admin_token` "
                f"({errcode or status}): it may have been logged out. The bot's operator must put "
                "a current access token of a server admin there."
            )
        if status == 403 and errcode == "M_FORBIDDEN":
            return NotServerAdmin(
                "The account of the bot's `[synapse] admin_token` is not a server admin, so the "
                "homeserver refuses (M_FORBIDDEN). The bot's operator must use a server admin's "
                "access token there."
            )
        if status == 404 and errcode in (None, "M_UNRECOGNIZED"):
            return AdminApiUnavailable(
                f"There is no Synapse admin API at {self._base}: is the homeserver Synapse, and "
                "does its reverse proxy pass `/_synapse/admin` through to it (for the bot)?"
            )
        if status == 429:
            return SynapseAdminError("The homeserver is rate-limiting me; try again in a moment.")
        if status == 400:
            return SynapseAdminError(f"The homeserver refused: {said or errcode or status}.")
        return SynapseAdminError(
            f"The homeserver answered {status}{f' ({errcode})' if errcode else ''}; "
            "try again later, or ask its admin to look at Synapse's log."
        )

    def _parsed(self, data: Any) -> RegistrationToken:
        try:
            return parse_token(data)
        except ValueError as problem:
            log.warning("synapse_admin.malformed_token", field=str(problem))
            raise SynapseAdminError(
                "The homeserver's answer about a registration token made no sense to me."
            ) from None

    @staticmethod
    def _path(token: str) -> str:
        if not TOKEN.fullmatch(token):  # never let member text shape the URL
            raise ValueError("not a registration token")
        return f"{TOKENS_PATH}/{quote(token, safe='')}"

    # -- the RegistrationTokens port -------------------------------------------------------------

    async def create(
        self, *, uses_allowed: int | None, expires_at: datetime | None
    ) -> RegistrationToken:
        body: dict[str, Any] = {
            "uses_allowed": uses_allowed,
            "expiry_time": int(expires_at.timestamp() * 1000) if expires_at else None,
        }
        status, answer = await self._call("POST", f"{TOKENS_PATH}/new", body)
        if status != 200:
            raise self._refusal(status, answer)
        return self._parsed(answer)

    async def list(self) -> list[RegistrationToken]:
        status, answer = await self._call("GET", TOKENS_PATH)
        if status != 200:
            raise self._refusal(status, answer)
        tokens = answer.get("registration_tokens")
        if not isinstance(tokens, list):
            raise SynapseAdminError("The homeserver's list of registration tokens made no sense.")
        return [self._parsed(t) for t in tokens]

    async def get(self, token: str) -> RegistrationToken | None:
        status, answer = await self._call("GET", self._path(token))
        if status == 404 and answer.get("errcode") == "M_NOT_FOUND":
            return None
        if status != 200:
            raise self._refusal(status, answer)
        return self._parsed(answer)

    async def delete(self, token: str) -> bool:
        status, answer = await self._call("DELETE", self._path(token))
        if status == 404 and answer.get("errcode") == "M_NOT_FOUND":
            return False
        if status != 200:
            raise self._refusal(status, answer)
        return True

    async def registration_mode(self) -> RegistrationMode:
        """What the homeserver asks of someone signing up (the flows of an unauthenticated
        `POST /register`, as a client would see them)."""
        try:
            status, answer = await self._call("POST", REGISTER_PATH, {}, admin=False)
        except HomeserverUnreachable:
            return RegistrationMode.UNKNOWN
        if status == 403 and answer.get("errcode") == "M_FORBIDDEN":
            return RegistrationMode.CLOSED
        flows = answer.get("flows")
        if status != 401 or not isinstance(flows, list) or not flows:
            return RegistrationMode.UNKNOWN
        stages = [f.get("stages") if isinstance(f, dict) else None for f in flows]
        if not all(isinstance(s, list) for s in stages):
            return RegistrationMode.UNKNOWN
        if all(TOKEN_STAGE in s for s in stages):  # type: ignore[operator]
            return RegistrationMode.TOKEN
        return RegistrationMode.OPEN
