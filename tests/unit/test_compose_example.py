"""The compose example and the image's health check hang together: files it mounts exist, the
bot's config loads with the environment compose gives it, Prometheus scrapes the metrics port,
and the Dockerfile's HEALTHCHECK asks /readyz without curl. (Docker itself is not run here; the
file is also checked against the Compose Specification's JSON schema by hand, see the report.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from bot.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRIB = REPO_ROOT / "contrib"


def compose() -> dict:
    return yaml.safe_load((CONTRIB / "compose.yaml").read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, innermost first."""
    innermost = re.compile(r"\$\{(\w+)(?::([-?])([^${}]*))?\}")

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        assert kind != "?", f"compose needs {name}: {rest}"
        return rest or ""

    while innermost.search(value):
        value = innermost.sub(one, value)
    return value


def healthcheck_command() -> list[str]:
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.MULTILINE)
    assert match, "the Dockerfile has no HEALTHCHECK"
    return json.loads(match.group(1))


def test_every_mounted_file_exists_and_services_are_complete() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "synapse", "bot", "prometheus"}
    assert services["prometheus"]["profiles"] == ["monitoring"]  # optional
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (CONTRIB / source).exists(), source
    assert services["bot"]["build"]["context"] == ".."
    assert (CONTRIB / services["bot"]["build"]["context"] / "Dockerfile").exists()


def test_the_bots_config_loads_with_the_environment_compose_gives_it() -> None:
    env = {
        key: interpolate(str(value), {"BOT_PASSWORD": "pw", "POSTGRES_PASSWORD": "pg"})
        for key, value in compose()["services"]["bot"]["environment"].items()
    }
    config = load_config(CONTRIB / "bot" / "config.toml", env=env)
    assert config.database.url == "postgresql+asyncpg://bot:pg@postgres/bot"
    assert config.web.public_url == "http://127.0.0.1:8080"
    assert config.metrics.address == ("0.0.0.0", 9000)  # noqa: S104 - inside the compose network
    target = yaml.safe_load((CONTRIB / "prometheus" / "prometheus.yml").read_text())
    assert target["scrape_configs"][0]["static_configs"][0]["targets"] == ["bot:9000"]


def test_the_image_health_check_asks_readyz_with_python() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"] and "/readyz" in command[2]
    compile(command[2], "HEALTHCHECK", "exec")
