"""A throwaway PostgreSQL server for tests (initdb + pg_ctl, no fsync, trust auth on 127.0.0.1).

PostgreSQL refuses to run as root, so when we are root the server runs as user ``postgres``;
its files then live in a directory that user can reach (``workdir`` when it can, else a
short-lived directory under the system temp dir, removed by ``stop()``).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.harness.processes import track, untrack

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb`` (env ``PG_BIN`` overrides)."""
    configured = os.environ.get("PG_BIN")
    if configured:
        candidates = [Path(configured)]
    else:

        def version(path: Path) -> tuple[int, ...]:
            return tuple(int(p) for p in re.findall(r"\d+", path.parent.name))

        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found under /usr/lib/postgresql: "
        "run scripts/install.sh"
    )


class PostgresServer:
    _databases = itertools.count(1)

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.bin_dir: Path | None = None
        self.base_dir: Path | None = None  # data, socket and log live here
        self._owns_base_dir = False
        self._started = False
        self._as_root = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "postgres.log"

    def _run_as_server_user(self, cmd: list[str], timeout: float = 60) -> str:
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd="/", check=False
        )
        if result.returncode != 0:
            log = ""
            if self.base_dir is not None and self.log_path.exists():
                log = "\n--- postgres.log ---\n" + self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}"
            )
        return result.stdout

    def _choose_base_dir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        candidate = self.workdir / "postgres"
        # Unix socket paths are limited to ~107 bytes; pytest tmp dirs can be long.
        if len(str(candidate)) < 80:
            candidate.mkdir(exist_ok=True)
            if not self._as_root:
                self.base_dir = candidate
                return
            shutil.chown(candidate, "postgres", "postgres")
            reachable = subprocess.run(
                ["runuser", "-u", "postgres", "--", "test", "-w", str(candidate)],
                capture_output=True,
                check=False,
            )
            if reachable.returncode == 0:
                self.base_dir = candidate
                return
        # e.g. /tmp/pytest-of-root is mode 0700: user postgres cannot traverse it.
        self.base_dir = Path(tempfile.mkdtemp(prefix="mcb-pg-"))
        self._owns_base_dir = True
        if self._as_root:
            shutil.chown(self.base_dir, "postgres", "postgres")

    def start(self) -> None:
        if self._started:
            return
        self.bin_dir = postgres_bin_dir()
        if self._as_root and shutil.which("runuser") is None:
            raise RuntimeError("running as root needs `runuser` to start PostgreSQL as postgres")
        if self.base_dir is None:
            self._choose_base_dir()
        assert self.base_dir is not None
        if not (self.data_dir / "PG_VERSION").exists():
            self._run_as_server_user(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
        options = (
            f"-p {self.port} -k {self.base_dir} -c listen_addresses={self.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        track(self)
        self._started = True
        try:
            self._run_as_server_user(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "30",
                    "start",
                ]
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._started and self.bin_dir is not None:
            self._started = False
            try:
                self._run_as_server_user(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ]
                )
            except RuntimeError:
                pass  # not running (e.g. start failed)
        untrack(self)
        if self._owns_base_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
            self._owns_base_dir = False

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its SQLAlchemy asyncpg URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")
        if not self._started or self.bin_dir is None:
            raise RuntimeError("PostgresServer is not started")
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                f'CREATE DATABASE "{name}"',
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE {name} failed: {result.stderr}")
        return self.url(name)

    def fresh_database_url(self) -> str:
        """A new, empty database (unique name per call)."""
        return self.create_database(f"test_{next(self._databases)}_{secrets.token_hex(4)}")

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self.port} base_dir={self.base_dir}>"
