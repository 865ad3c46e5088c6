"""What a start costs: a database already at the newest revision is recognised without loading
alembic, and the libraries of the assistant and of the SSO flow are not loaded until needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from bot.store.migrate import head_revision, newest_revision_named

PYTHON = sys.executable


def test_the_newest_revision_is_read_from_the_files_as_alembic_reads_it():
    assert newest_revision_named() == head_revision()


def run(code: str) -> str:
    return subprocess.run(
        [PYTHON, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    ).stdout


def test_a_new_database_or_one_at_the_newest_revision_is_opened_without_alembic(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/bot.db"
    program = f"""
        import asyncio, sys
        from bot.store.database import Database
        from bot.store.migrate import upgrade_to_head
        async def main():
            db = Database({url!r})
            print(await upgrade_to_head(db))
            await db.close()
        asyncio.run(main())
        print("alembic" in sys.modules)
    """
    first = run(program).split("\n")
    assert first[0].startswith("(None, ") and first[1] == "False"  # new: made in one go
    again = run(program).split("\n")
    assert again[1] == "False", again  # at the newest revision: alembic never loaded


def test_importing_the_bot_loads_neither_the_assistant_nor_the_sso_libraries():
    """Nor cryptography (loaded beside the first sync, for cross-signing, or at the first SSO
    token sealed), nor SQLAlchemy's PostgreSQL dialect on SQLite."""
    loaded = run(
        """
        import sys
        import bot.cli, bot.app
        heavy = ("langchain_openai", "langchain_core", "openai", "authlib", "joserfc", "alembic",
                 "apscheduler", "cryptography", "sqlalchemy.dialects.postgresql")
        print(",".join(m for m in heavy if m in sys.modules))
        """
    ).strip()
    assert loaded == ""


def test_the_collector_is_paused_while_the_bot_starts_and_runs_again_after(tmp_path):
    """`community-bot` imports with the cyclic collector paused (bot/startup_gc.py); whatever the
    command, the collector runs again at its end, with what start-up built frozen."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[matrix]\nhomeserver = "http://127.0.0.1:9"\nuser_id = "@b:localhost"\n'
        'password = "x"\n[web]\npublic_url = "http://127.0.0.1:8080"\n'
        f'[data]\ndir = "{tmp_path / "data"}"\n'
    )
    out = (
        run(
            f"""
        import gc, sys
        from bot import startup_gc
        from bot.cli import main
        seen = []
        original = startup_gc.resume
        def resume():
            seen.append(gc.isenabled())  # still paused when start-up ends
            original()
        startup_gc.resume = resume
        assert "pydantic" not in sys.modules  # the heavy imports wait for main()
        code = main(["check-config", {str(config)!r}])
        print(code, seen, gc.isenabled(), gc.get_freeze_count() > 10_000)
        """
        )
        .strip()
        .splitlines()[-1]
    )
    assert out == "0 [False] True True"
