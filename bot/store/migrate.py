"""Brings a database to the code's schema, and refuses one that is newer than the code.

Alembic takes a second to import and to read its scripts: when the database is already at the
newest revision (every start but the first after an upgrade), that is seen with one query against
the revision the migration files name as newest, and alembic is not loaded at all."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

from sqlalchemy import text
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


async def upgrade_to_head(db: Database) -> tuple[str | None, str]:
    """Apply pending revisions in one transaction; returns (revision before, revision after)."""
    newest = newest_revision_named()
    if newest is not None and await _stored_revision(db) == newest:
        return newest, newest
    from alembic import command

    cfg = _alembic_config()

    def run(connection: Connection) -> tuple[str | None, str]:
        before = _current(connection)
        _check_known(cfg, before)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
        return before, _current(connection) or ""

    async with db.engine.begin() as connection:
        return await connection.run_sync(run)
