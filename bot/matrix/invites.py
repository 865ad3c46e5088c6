"""Which invites the bot accepts: only from `[matrix] autojoin_from` (MXIDs or servers) and admins.
An invite marked `is_direct` is remembered as the inviter's DM."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from nio import AsyncClient, InviteMemberEvent, JoinError

log = structlog.get_logger(__name__)


def server_of(mxid: str) -> str:
    return mxid.split(":", 1)[1] if ":" in mxid else ""


class InvitePolicy:
    def __init__(self, autojoin_from: Iterable[str], admins: Iterable[str]) -> None:
        entries = set(autojoin_from)
        self._users = {e for e in entries if e.startswith("@")} | set(admins)
        self._servers = {e.lower() for e in entries if not e.startswith("@")}
        # Why an allowed inviter's invite is still refused (the ban lists followed), or None.
        self.refusal: Callable[[str, str], str | None] = lambda _room_id, _inviter: None

    def allows(self, inviter: str) -> bool:
        return inviter in self._users or server_of(inviter).lower() in self._servers


async def answer_invite(
    client: AsyncClient,
    policy: InvitePolicy,
    room_id: str,
    invite_state: list[Any],
    remember_dm: Callable[[str, str], Awaitable[None]],
) -> None:
    """Join when the inviter may invite the bot, else leave (refuse); `remember_dm(inviter, room)`
    for a direct-chat invite."""
    invite = next(
        (
            e
            for e in invite_state
            if isinstance(e, InviteMemberEvent)
            and e.state_key == client.user_id
            and e.membership == "invite"
        ),
        None,
    )
    if invite is None:
        return
    inviter = invite.sender
    bound = log.bind(room_id=room_id, inviter=inviter)
    if not policy.allows(inviter):
        bound.info("matrix.invite_refused", reason="inviter not in matrix.autojoin_from")
        await client.room_leave(room_id)
        return
    refused = policy.refusal(room_id, inviter)
    if refused is not None:
        bound.warning("matrix.invite_refused", reason=f"banned by a {refused}")
        await client.room_leave(room_id)
        return
    response = await client.join(room_id)
    if isinstance(response, JoinError):
        bound.warning("matrix.join_failed", error=response.message)
        return
    bound.info("matrix.joined")
    if invite.content.get("is_direct"):
        await remember_dm(inviter, room_id)
