"""`[database] leader_lease` and `leader_heartbeat`: sane defaults, and values that could not
work (a heartbeat that misses the lease, a lease too short to survive a hiccup) refused at start
with one clear line each."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config

BASE = (
    '[matrix]\nhomeserver = "https://m.example.org"\nuser_id = "@bot:example.org"\npassword = "p"\n'
)


def problems(tmp_path: Path, database: str) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(BASE + "[database]\n" + database)
    try:
        load_config(path, env={})
    except ConfigError as error:
        return list(error.problems)
    return []


def test_defaults_are_a_ten_second_lease_renewed_every_three(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(BASE)
    database = load_config(path, env={}).database
    assert database.leader_lease == timedelta(seconds=10)
    assert database.leader_heartbeat == timedelta(seconds=3)


def test_values_that_work_are_taken(tmp_path: Path) -> None:
    assert problems(tmp_path, 'leader_lease = "30s"\nleader_heartbeat = "10s"\n') == []
    assert problems(tmp_path, 'leader_lease = "2s"\nleader_heartbeat = "1s"\n') == []


@pytest.mark.parametrize(
    ("database", "expected"),
    [
        ('leader_lease = "5s"\nleader_heartbeat = "3s"\n', "at most half of leader_lease"),
        ('leader_lease = "1s"\n', "leader_lease: expected between 2s and 10m"),
        ('leader_lease = "1h"\n', "leader_lease: expected between 2s and 10m"),
        ('leader_heartbeat = "0s"\n', "leader_heartbeat: expected at least 1s"),
        ('leader_lease = "soon"\n', "expected a duration"),
    ],
)
def test_values_that_cannot_work_are_refused(tmp_path: Path, database: str, expected: str) -> None:
    found = problems(tmp_path, database)
    assert len(found) == 1 and expected in found[0] and found[0].startswith("database"), found
