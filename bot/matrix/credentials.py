"""The bot's device and access token, kept in the data dir so a restart reuses the same device
(its encryption keys live with it)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    homeserver: str
    user_id: str
    device_id: str
    access_token: str


def credentials_path(data_dir: Path) -> Path:
    return data_dir / "matrix-credentials.json"


def load_credentials(data_dir: Path, homeserver: str, user_id: str) -> Credentials | None:
    path = credentials_path(data_dir)
    try:
        raw = json.loads(path.read_text())
        creds = Credentials(**raw)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as problem:
        raise RuntimeError(f"{path} is damaged ({problem}); remove it to log in afresh") from None
    if creds.homeserver.rstrip("/") != homeserver.rstrip("/") or creds.user_id != user_id:
        return None
    return creds


def save_credentials(data_dir: Path, creds: Credentials) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = credentials_path(data_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(creds), handle)
    os.replace(tmp, path)
