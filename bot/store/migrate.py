"""Brings a database to the code's schema, and refuses one that is newer than the code.

Alembic takes a second to import and to read its scripts, and running every revision on a new
database takes more. So: a database already at the newest revision (every start but the first
after an upgrade) is recognised with one query against the revision the migration files name as
newest; an empty one gets the models' tables in one go and is stamped with that revision (the
revisions and the models are tested to give the same schema, on SQLite and PostgreSQL); only a
database at an older revision is upgraded by alembic."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from bot.errors import OperatorError
from bot.store.database import Database

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

_REVISION = re.compile(r'^(down_)?revision\s*=\s*["\']([^"\']+)["\']', re.MULTILINE)


class SchemaError(OperatorError):
    """The database cannot be used by this version of the bot."""


def _alembic_config() -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(files("migrations")))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


@cache
def newest_revision_named() -> str | None:
    """The newest revision as the migration files name it (the one no other revises), read
    without alembic; None when the files cannot be read that way (alembic decides then)."""
    revisions, revised = set(), set()
    for path in files("migrations").joinpath("versions").iterdir():
        if not path.name.endswith(".py"):
            continue
        for down, name in _REVISION.findall(path.read_text()):
            (revised if down else revisions).add(name)
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


async def _stored_revision(db: Database) -> str | None:
    try:
        async with db.engine.connect() as connection:
            return await connection.scalar(text("SELECT version_num FROM alembic_version"))
    except SQLAlchemyError:  # no table yet: a new database
        return None


def _empty(connection: Connection) -> bool:
    return not inspect(connection).get_table_names()


def _create_at(connection: Connection, revision: str) -> None:
    """A new database: the models' tables as they are at `revision`, stamped with it."""
    from bot.store.models import Base, declare_trigram_indexes

    if connection.dialect.name == "postgresql":
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        declare_trigram_indexes()
    Base.metadata.create_all(connection, checkfirst=False)  # known to be empty
    connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))  # fmt: skip
    connection.execute(
        text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": revision}
    )


# Processes starting together on one PostgreSQL database (active/standby) change its schema one
# after the other: the second finds the work done.
_SCHEMA_LOCK = 0x636F6D6D  # any constant; only our own processes take it


def _one_at_a_time(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})


async def _create_if_empty(db: Database, revision: str) -> bool:
    async with db.engine.begin() as connection:
        await connection.run_sync(_one_at_a_time)
        if not await connection.run_sync(_empty):
            return False
        await connection.run_sync(_create_at, revision)
        return True


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _check_known(cfg: AlembicConfig, current: str | None) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    if current is None:
        return
    script = ScriptDirectory.from_config(cfg)
    try:
        script.get_revision(current)
    except CommandError:
        raise SchemaError(
            f"the database is at schema revision {current!r}, which this version of "
            f"community-bot does not know (its newest is {script.get_current_head()!r}); "
            "the database was upgraded by a newer release: run that release or restore a backup"
        ) from None


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as connection:
        return await connection.run_sync(_current)


async def upgrade_to_head(
    db: Database, *, through_revisions: bool = False
) -> tuple[str | None, str]:
    """Apply pending revisions in one transaction; returns (revision before, revision after).
    `through_revisions` runs alembic even where a shortcut would do (tests of the revisions)."""
    newest = None if through_revisions else newest_revision_named()
    if newest is not None:
        stored = await _stored_revision(db)
        if stored == newest:
            return newest, newest
        if stored is None and await _create_if_empty(db, newest):
            return None, newest
    from alembic import command

    cfg = _alembic_config()

    def run(connection: Connection) -> tuple[str | None, str]:
        _one_at_a_time(connection)
        before = _current(connection)
        _check_known(cfg, before)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
        return before, _current(connection) or ""

    async with db.engine.begin() as connection:
        return await connection.run_sync(run)
