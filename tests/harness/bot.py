"""Runs the real bot (BotApp) in the test's event loop, from a real TOML config file."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.app import BotApp
from bot.config import Config, load_config
from tests.harness.synapse import MatrixAccount, SynapseServer, free_port


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value))


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """A TOML file from plain data; lists of dicts become [[section.key]] tables."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(
            f"{key} = {_toml_value(value)}"
            for key, value in values.items()
            if not _is_tables(value)
        )
        lines.append("")
        for key, tables in values.items():
            if _is_tables(tables):
                for table in tables:
                    lines.append(f"[[{section}.{key}]]")
                    lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
                    lines.append("")
    path.write_text("\n".join(lines))
    return path


@dataclass
class RunningBot:
    config_path: Path
    account: MatrixAccount
    app: BotApp | None = None
    task: asyncio.Task[None] | None = None
    runs: int = field(default=0)

    @property
    def user_id(self) -> str:
        return self.account.user_id

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    async def start(self, ready_timeout: float = 30) -> None:
        self.app = BotApp(self.config, long_poll_ms=2_000, job_poll_s=0.5)
        self.task = asyncio.create_task(self.app.run())
        self.runs += 1
        ready = asyncio.create_task(self.app.ready.wait())
        done, _ = await asyncio.wait(
            {ready, self.task}, timeout=ready_timeout, return_when="FIRST_COMPLETED"
        )
        if self.task in done:
            ready.cancel()
            self.task.result()
            raise RuntimeError("the bot stopped before it was ready")
        if ready not in done:
            ready.cancel()
            raise TimeoutError(f"the bot was not ready within {ready_timeout} s")

    async def stop(self) -> None:
        if self.app is None or self.task is None:
            return
        self.app.stop()
        try:
            await asyncio.wait_for(self.task, 20)
        finally:
            self.app = self.task = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


def bot_config(
    synapse: SynapseServer,
    account: MatrixAccount,
    data_dir: Path,
    *,
    admins: list[str] = (),  # type: ignore[assignment]
    autojoin_from: list[str] | None = None,
    encryption: bool = False,
    extra: dict[str, dict[str, Any]] | None = None,
    web_port: int | None = None,
) -> dict[str, dict[str, Any]]:
    web_port = web_port or free_port()
    sections: dict[str, dict[str, Any]] = {
        "matrix": {
            "homeserver": synapse.base_url,
            "user_id": account.user_id,
            "password": account.password,
            "encryption": encryption,
            "autojoin_from": autojoin_from if autojoin_from is not None else [synapse.server_name],
        },
        "data": {"dir": str(data_dir)},
        "web": {"listen": f"127.0.0.1:{web_port}", "public_url": f"http://127.0.0.1:{web_port}"},
        "roles": {"admins": list(admins)},
        "logging": {"level": "debug"},
    }
    for section, values in (extra or {}).items():
        sections.setdefault(section, {}).update(values)
    return sections


@contextlib.asynccontextmanager
async def running_bot(synapse: SynapseServer, tmp_path: Path, **options: Any):  # type: ignore[no-untyped-def]
    account = options.pop("account", None) or synapse.fresh_account("bot")
    path = write_config(
        tmp_path / "config.toml", bot_config(synapse, account, tmp_path / "data", **options)
    )
    bot = RunningBot(path, account)
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()
