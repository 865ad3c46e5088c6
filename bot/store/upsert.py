"""Insert-or-ignore and insert-or-update that work the same on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase

# Statements run in an ORM session, or (on hot paths: cheaper) on a plain connection.
Executor = AsyncSession | AsyncConnection


def _insert(session: Executor, model: type[DeclarativeBase]) -> Any:
    dialect = session.dialect if isinstance(session, AsyncConnection) else session.bind.dialect
    if dialect.name == "postgresql":  # imported when used: SQLite installs never load it
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model.__table__)  # the table, not the mapped class: no ORM overhead


async def insert_ignore(session: Executor, model: type[DeclarativeBase], **values: Any) -> bool:
    """Insert unless the primary key exists; True when this call inserted the row."""
    stmt = _insert(session, model).values(**values).on_conflict_do_nothing()
    result = await session.execute(stmt)
    return bool(result.rowcount)


async def upsert(session: Executor, model: type[DeclarativeBase], key: str, **values: Any) -> None:
    stmt = _insert(session, model).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[key], set_={k: v for k, v in values.items() if k != key}
    )
    await session.execute(stmt)
