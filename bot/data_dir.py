"""The data dir holds the bot's secrets (access token, cross-signing and Olm keys, the session
secret, usually the database): it is made readable by the bot's user only, whatever the umask."""

from __future__ import annotations

from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def make_private(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if data_dir.stat().st_mode & 0o077:
        data_dir.chmod(0o700)
        log.info("data.dir_made_private", path=str(data_dir))
