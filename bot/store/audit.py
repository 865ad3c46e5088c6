"""Writing audit entries inside the transaction of the change they record, so both land together."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.models import AuditEntry


def add_entry(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    room_id: str | None = None,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record inside the caller's transaction, so the entry and the change land together."""
    session.add(
        AuditEntry(
            actor=actor, action=action, target=target, room_id=room_id, reason=reason, detail=detail
        )
    )
