"""A real Synapse homeserver for tests and demos, started as a subprocess.

Synchronous on purpose: it is used from sync pytest fixtures and from plain scripts.
The configuration is a minimal one written here (not ``--generate-config``, which binds ``::1``,
serves federation and trusts matrix.org keys): one client listener on 127.0.0.1 and SQLite, or
another database when given one (``database=``, e.g. PostgreSQL for the benchmarks).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.harness.processes import spawn, tail, terminate, untrack

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every rate limiter a test may trip over; relaxed unless a test is about rate limits.
_RELAXED = {"per_second": 1000, "burst_count": 10000}
RELAXED_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _RELAXED,
    "rc_registration": _RELAXED,
    "rc_login": {"address": _RELAXED, "account": _RELAXED, "failed_attempts": _RELAXED},
    "rc_joins": {"local": _RELAXED, "remote": _RELAXED},
    "rc_joins_per_room": _RELAXED,
    "rc_invites": {"per_room": _RELAXED, "per_user": _RELAXED, "per_issuer": _RELAXED},
    "rc_room_creation": _RELAXED,
    "rc_admin_redaction": _RELAXED,
    "rc_key_requests": _RELAXED,
}


@dataclass
class MatrixAccount:
    user_id: str
    password: str
    access_token: str
    device_id: str


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged over ``base`` (dicts recursively, everything else replaced)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def synapse_python() -> Path:
    """The Python interpreter of the Synapse virtualenv (env ``SYNAPSE_PYTHON`` overrides)."""
    configured = os.environ.get("SYNAPSE_PYTHON")
    python = Path(configured) if configured else REPO_ROOT / ".cache/synapse-venv/bin/python"
    if not python.exists():
        raise RuntimeError(
            f"Synapse is not installed: run `make test` or scripts/install.sh ({python} is missing)"
        )
    return python


class SynapseServer:
    """One Synapse process with its data in ``workdir`` (kept across restarts)."""

    _accounts = itertools.count(1)

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        relaxed_rate_limits: bool = True,
        server_name: str = "localhost",
        extra_config: dict[str, Any] | None = None,
        database: dict[str, Any] | None = None,
    ) -> None:
        """``database`` is Synapse's ``database`` config block, used instead of SQLite in
        ``workdir``: e.g. ``{"name": "psycopg2", "args": {"user": "postgres", "host":
        "127.0.0.1", "port": port, "database": "synapse", "cp_min": 5, "cp_max": 10}}``.
        Synapse needs that PostgreSQL database created with ``ENCODING 'UTF8' LC_COLLATE 'C'
        LC_CTYPE 'C' TEMPLATE template0``; the Synapse virtualenv has psycopg2 (install.sh)."""
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.server_name = server_name
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.relaxed_rate_limits = relaxed_rate_limits
        self.extra_config = extra_config or {}
        self.database = copy.deepcopy(database) if database is not None else None
        self.config_path = self.workdir / "homeserver.yaml"
        self.log_config_path = self.workdir / "log_config.yaml"
        self.log_path = self.workdir / "homeserver.log"
        self.output_path = self.workdir / "homeserver.out"  # stdout/stderr (startup errors)
        self.signing_key_path = self.workdir / "signing.key"
        self.registration_shared_secret = ""
        self.process: subprocess.Popen[bytes] | None = None

    # -- configuration -------------------------------------------------------------------------

    def build_config(self) -> dict[str, Any]:
        """The homeserver configuration (a dict; written as JSON, which YAML parsers accept)."""
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": f"{self.base_url}/",
            "pid_file": str(self.workdir / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": (
                copy.deepcopy(self.database)
                if self.database is not None
                else {
                    "name": "sqlite3",
                    "args": {"database": str(self.workdir / "homeserver.db")},
                }
            ),
            "log_config": str(self.log_config_path),
            "media_store_path": str(self.workdir / "media_store"),
            "signing_key_path": str(self.signing_key_path),
            "registration_shared_secret": self.registration_shared_secret,
            "enable_registration": False,
            "macaroon_secret_key": secrets.token_urlsafe(32),
            "form_secret": secrets.token_urlsafe(32),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "presence": {"enabled": False},
            "url_preview_enabled": False,
            "report_stats": False,
            "enable_metrics": False,
            "bcrypt_rounds": 4,  # test passwords: registration in ms instead of ~0.3 s
        }
        if self.relaxed_rate_limits:
            config.update(copy.deepcopy(RELAXED_RATE_LIMITS))
        return deep_merge(config, self.extra_config)

    def _log_config(self) -> dict[str, Any]:
        return {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "precise": {"format": "%(asctime)s - %(name)s - %(levelname)s - %(message)s"}
            },
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "root": {"level": "WARNING", "handlers": ["file"]},
        }

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "media_store").mkdir(exist_ok=True)
        self.registration_shared_secret = secrets.token_urlsafe(32)
        self.log_config_path.write_text(json.dumps(self._log_config(), indent=2))
        self.config_path.write_text(json.dumps(self.build_config(), indent=2))
        if not self.signing_key_path.exists():
            # The format signedjson writes: "<alg> <version> <unpadded base64 of the 32-byte seed>"
            # (any 32 random bytes are a valid ed25519 seed). Saves ~0.5 s over the script.
            seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            self.signing_key_path.write_text(f"ed25519 a_{secrets.token_hex(2)} {seed}\n")

    def _load_secret(self) -> None:
        config = json.loads(self.config_path.read_text())
        self.registration_shared_secret = config["registration_shared_secret"]

    # -- process -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30) -> None:
        if self.running:
            return
        python = synapse_python()
        if self.config_path.exists():
            self._load_secret()
        else:
            self._write_config()
        self.process = spawn(
            self, [str(python), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
            cwd=self.workdir, output=self.output_path, append=True,
        )  # fmt: skip
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        last_error = ""
        with httpx.Client(timeout=2) as http:
            while time.monotonic() < deadline:
                code = self.process.poll()
                if code is not None:
                    raise RuntimeError(
                        f"Synapse exited with code {code} during startup.\n{self._diagnostics()}"
                    )
                try:
                    if http.get(f"{self.base_url}/health").status_code == 200:
                        return
                except httpx.HTTPError as exc:
                    last_error = repr(exc)
                time.sleep(0.05)
        raise RuntimeError(
            f"Synapse did not become healthy at {self.base_url} within {timeout} s "
            f"(last error: {last_error}).\n{self._diagnostics()}"
        )

    def _diagnostics(self) -> str:
        return (
            f"--- tail of {self.log_path} ---\n{tail(self.log_path)}\n"
            f"--- tail of {self.output_path} ---\n{tail(self.output_path)}"
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        terminate(process, timeout=10)
        untrack(self)

    def restart(self, timeout: float = 30) -> None:
        self.stop()
        self.start(timeout=timeout)

    def __enter__(self) -> SynapseServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- users ---------------------------------------------------------------------------------

    def register(self, localpart: str, password: str, admin: bool = False) -> MatrixAccount:
        """Create a user through the shared-secret admin registration API, logged in."""
        url = f"{self.base_url}/_synapse/admin/v1/register"
        with httpx.Client(timeout=30) as http:
            nonce_response = http.get(url)
            nonce_response.raise_for_status()
            nonce = nonce_response.json()["nonce"]
            mac = hmac.new(self.registration_shared_secret.encode(), digestmod=hashlib.sha1)
            mac.update(
                b"\x00".join(
                    [
                        nonce.encode(),
                        localpart.encode(),
                        password.encode(),
                        b"admin" if admin else b"notadmin",
                    ]
                )
            )
            response = http.post(
                url,
                json={
                    "nonce": nonce,
                    "username": localpart,
                    "password": password,
                    "admin": admin,
                    "mac": mac.hexdigest(),
                },
            )
        if response.status_code != 200:
            raise RuntimeError(
                f"registering {localpart!r} failed: {response.status_code} {response.text}"
            )
        body = response.json()
        return MatrixAccount(
            user_id=body["user_id"],
            password=password,
            access_token=body["access_token"],
            device_id=body["device_id"],
        )

    def fresh_account(self, prefix: str = "user", admin: bool = False) -> MatrixAccount:
        """A new user with a unique localpart (``<prefix>-<n>-<random>``)."""
        localpart = f"{prefix}-{next(self._accounts)}-{secrets.token_hex(3)}".lower()
        return self.register(localpart, secrets.token_urlsafe(16), admin=admin)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SynapseServer {self.base_url} {state} workdir={self.workdir}>"


if __name__ == "__main__":  # manual check: python -m tests.harness.synapse
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, SynapseServer(Path(tmp)) as server:
        print(server, server.fresh_account(), file=sys.stderr)
