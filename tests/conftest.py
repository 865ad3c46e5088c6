"""Shared fixtures: real Synapse and PostgreSQL servers (see tests/harness/)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.postgres import PostgresServer
from tests.harness.synapse import REPO_ROOT, SynapseServer


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """Synapse with relaxed rate limits, shared by the whole session: use fresh accounts."""
    server = SynapseServer(tmp_path_factory.mktemp("synapse"), relaxed_rate_limits=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def synapse_default_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """A second Synapse keeping Synapse's default rate limits (rc_message 0.2/s, burst 10).

    Started only when a test asks for it."""
    server = SynapseServer(
        tmp_path_factory.mktemp("synapse-default-limits"), relaxed_rate_limits=False
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database: ``postgresql+asyncpg://postgres@127.0.0.1:PORT/<name>``."""
    return postgres.fresh_database_url()


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """``test-artifacts/<test name>/`` under the repository root (screenshots, logs)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_") or "test"
    path = REPO_ROOT / "test-artifacts" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- OpenID provider and browser (tests/harness/oidc.py, tests/harness/hostile_oidc.py) -----------

from collections.abc import AsyncIterator  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from playwright.async_api import Browser

    from tests.harness.oidc import OidcProvider

CHROMIUM_PATH = "/usr/bin/chromium"  # Debian's package; never `playwright install`
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """node-oidc-provider shared by the session, started when a test first asks for it.

    It starts without clients or accounts: register yours with ``add_client(...)`` and
    ``set_account(...)`` (both take effect at once, without a restart), and use client ids of
    your own (e.g. with the test's name) to stay out of other tests' way."""
    from tests.harness.oidc import OidcProvider

    server = OidcProvider(tmp_path_factory.mktemp("oidc-provider"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """Debian's headless Chromium driven by Playwright (async API), closed after the test."""
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM_PATH).exists():
        raise RuntimeError(f"{CHROMIUM_PATH} is missing: run scripts/install.sh")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on a real PostgreSQL: an empty database's URL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/bot.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def migrated_db(store_url: str):  # type: ignore[no-untyped-def]
    """A Database at the code's schema, on each backend (see store_url)."""
    from bot.store.database import Database
    from bot.store.migrate import upgrade_to_head

    database = Database(store_url)
    await upgrade_to_head(database)
    yield database
    await database.close()
