"""`community-bot run | web | migrate | recovery-key | check-config`: the operator's entry
points. Problems an operator can fix (config, credentials, schema) end with a clear message and
exit 1, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
import sys
from collections.abc import Sequence

from bot import startup_gc

# The heavy imports (the config's models, the store, nio) happen in main(), with the collector
# paused (bot/startup_gc.py).


def _fail(message: str) -> int:
    print(f"community-bot: {message}", file=sys.stderr)
    return 1


def _config_or_exit(path: str):  # type: ignore[no-untyped-def]
    from bot.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as problem:
        print(f"community-bot: configuration problems in {path}:", file=sys.stderr)
        for line in problem.problems:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(1) from None


async def _run(config) -> None:  # type: ignore[no-untyped-def]
    from bot.app import BotApp
    from bot.leader import exit_now

    app = BotApp(config, on_lease_lost=exit_now)  # a leader that lost its lease leaves at once
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stop)
    await app.run()


async def _web(config) -> None:  # type: ignore[no-untyped-def]
    """The web app alone (e.g. several behind a load balancer), on the bot's database."""
    from bot.data_dir import make_private
    from bot.store.database import Database
    from bot.store.migrate import upgrade_to_head
    from web_callback.app import create_app, serve

    make_private(config.data.dir)
    db = Database(config.database.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await upgrade_to_head(db)
        runner = await serve(create_app(config, db), config.web.listen_host, config.web.listen_port)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        await db.close()


async def _migrate(config) -> None:  # type: ignore[no-untyped-def]
    from bot.store.database import Database
    from bot.store.migrate import upgrade_to_head

    db = Database(config.database.url)
    try:
        before, after = await upgrade_to_head(db)
    finally:
        await db.close()
    print(
        f"database at revision {after}"
        + (f" (was {before})" if before != after else " (up to date)")
    )


async def _recovery_key(config, *, rotate: bool = False) -> None:  # type: ignore[no-untyped-def]
    from bot.recovery_command import recovery_key

    await recovery_key(config, rotate=rotate)


def main(argv: Sequence[str] | None = None) -> int:
    startup_gc.pause()  # `run` resumes it once wired; every command at its end
    try:
        return _main(argv)
    finally:
        startup_gc.resume()


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="community-bot", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the bot (and its web app) until SIGTERM/SIGINT")
    run.add_argument("--config", required=True, help="path to config.toml")
    migrate = commands.add_parser("migrate", help="bring the database schema up to date and exit")
    migrate.add_argument("--config", required=True, help="path to config.toml")
    web = commands.add_parser("web", help="run only the SSO web app, on the bot's database")
    web.add_argument("--config", required=True, help="path to config.toml")
    recovery = commands.add_parser(
        "recovery-key", help="make the encryption recovery key (once) and show it once"
    )
    recovery.add_argument("--config", required=True, help="path to config.toml")
    recovery.add_argument(
        "--rotate",
        action="store_true",
        help=(
            "replace an existing recovery key (the old stops working) and the room-key backup "
            "key (the bot starts a new backup at its next start); the cross-signing keys are "
            "NOT rotated"
        ),
    )
    check = commands.add_parser("check-config", help="validate a config file and print a summary")
    check.add_argument("path", help="path to config.toml")
    args = parser.parse_args(argv)

    if args.command == "check-config":
        from bot.config import redacted_dict

        config = _config_or_exit(args.path)
        for section, values in redacted_dict(config).items():
            if not isinstance(values, dict):
                print(f"# {section}: {values}")
                continue
            print(f"[{section}]")
            for key, value in values.items():
                print(f"  {key} = {value!r}")
        print("config ok")
        return 0

    config = _config_or_exit(args.config)
    from bot.errors import OperatorError
    from bot.logging import configure_logging

    configure_logging(config.logging.level, config.logging.format)
    try:
        recovery = functools.partial(_recovery_key, rotate=getattr(args, "rotate", False))
        runner = {"run": _run, "web": _web, "migrate": _migrate, "recovery-key": recovery}[
            args.command
        ]
        asyncio.run(runner(config))
    except OperatorError as problem:
        return _fail(str(problem))
    except KeyboardInterrupt:
        return 130
    except Exception:
        import structlog

        structlog.get_logger("bot").exception("bot.crashed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
