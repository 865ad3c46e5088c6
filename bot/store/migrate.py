"""Brings a database to the code's schema, and refuses one that is newer than the code."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

from bot.errors import OperatorError
from bot.store.database import Database


class SchemaError(OperatorError):
    """The database cannot be used by this version of the bot."""


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(files("migrations")))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _check_known(cfg: AlembicConfig, current: str | None) -> None:
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
    cfg = _alembic_config()

    def run(connection: Connection) -> tuple[str | None, str]:
        before = _current(connection)
        _check_known(cfg, before)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
        return before, _current(connection) or ""

    async with db.engine.begin() as connection:
        return await connection.run_sync(run)
