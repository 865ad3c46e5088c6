"""Health checks for orchestrators: ``/healthz`` says the process runs, ``/readyz`` says it can
do its work. The web app knows nothing of Matrix: the bot hands it a probe (a plain callable)
that names its own checks; the web app adds the database's."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from bot.store.database import Database

# Each check by name: None when it passes, else a short reason (no secrets, no member data).
ReadinessProbe = Callable[[], Mapping[str, str | None]]


async def healthz(_request: web.Request) -> web.Response:
    """Alive: the process runs and its event loop answers. Nothing else is asked."""
    return web.json_response({"status": "ok"})


def readyz_handler(db: Database, probe: ReadinessProbe | None) -> Callable[..., object]:
    async def readyz(_request: web.Request) -> web.Response:
        checks: dict[str, str | None] = dict(probe()) if probe is not None else {}
        checks["database"] = None if await db.reachable() else "the database does not answer"
        failed = sorted(name for name, problem in checks.items() if problem is not None)
        body = {
            "status": "not ready" if failed else "ready",
            "failed": failed,
            "checks": {name: problem or "ok" for name, problem in checks.items()},
        }
        return web.json_response(body, status=503 if failed else 200)

    return readyz


def add_health_routes(app: web.Application, db: Database, probe: ReadinessProbe | None) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz_handler(db, probe))
