"""Storage of the followed policy lists, of the bans their rules caused and of the server-ACL
denies they wrote."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.models import PolicyAclDenies, PolicyBan, PolicyList


async def all_lists(session: AsyncSession) -> list[PolicyList]:
    return list(await session.scalars(select(PolicyList).order_by(PolicyList.name)))


async def list_by_name(session: AsyncSession, name: str) -> PolicyList | None:
    return await session.scalar(select(PolicyList).where(PolicyList.name == name))


async def bans_of_rule(
    session: AsyncSession, list_room_id: str, kind: str, key: str
) -> list[PolicyBan]:
    return list(
        await session.scalars(
            select(PolicyBan).where(
                PolicyBan.list_room_id == list_room_id,
                PolicyBan.rule_kind == kind,
                PolicyBan.rule_key == key,
            )
        )
    )


async def all_bans(session: AsyncSession, list_room_id: str | None = None) -> list[PolicyBan]:
    query = select(PolicyBan).order_by(PolicyBan.id)
    if list_room_id is not None:
        query = query.where(PolicyBan.list_room_id == list_room_id)
    return list(await session.scalars(query))


async def ban_record(session: AsyncSession, room_id: str, mxid: str) -> PolicyBan | None:
    return await session.scalar(
        select(PolicyBan).where(PolicyBan.room_id == room_id, PolicyBan.mxid == mxid)
    )


async def forget_bans(session: AsyncSession, room_id: str | None, mxids: Iterable[str]) -> None:
    """The bans are no longer the lists' (a moderator took them over, or lifted them)."""
    query = delete(PolicyBan).where(PolicyBan.mxid.in_(list(mxids)))
    if room_id is not None:
        query = query.where(PolicyBan.room_id == room_id)
    await session.execute(query)


async def acl_denies_written(session: AsyncSession, room_id: str) -> frozenset[str]:
    """The deny entries the lists wrote into this room's server ACL (none recorded: none)."""
    row = await session.get(PolicyAclDenies, room_id)
    deny = row.deny if row is not None and isinstance(row.deny, list) else []
    return frozenset(entry for entry in deny if isinstance(entry, str))


async def set_acl_denies_written(session: AsyncSession, room_id: str, deny: Iterable[str]) -> None:
    row = await session.get(PolicyAclDenies, room_id)
    entries = sorted(deny)
    if not entries:
        if row is not None:
            await session.delete(row)
    elif row is None:
        session.add(PolicyAclDenies(room_id=room_id, deny=entries))
    else:
        row.deny = entries
