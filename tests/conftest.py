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
