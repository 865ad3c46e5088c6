"""Which invites the bot accepts: only from `[matrix] autojoin_from` (MXIDs or servers) and admins."""

from __future__ import annotations

from collections.abc import Iterable


def server_of(mxid: str) -> str:
    return mxid.split(":", 1)[1] if ":" in mxid else ""


class InvitePolicy:
    def __init__(self, autojoin_from: Iterable[str], admins: Iterable[str]) -> None:
        entries = set(autojoin_from)
        self._users = {e for e in entries if e.startswith("@")} | set(admins)
        self._servers = {e.lower() for e in entries if not e.startswith("@")}

    def allows(self, inviter: str) -> bool:
        return inviter in self._users or server_of(inviter).lower() in self._servers
