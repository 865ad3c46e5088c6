"""An aiohttp app listening on an address: the web app and the metrics both start this way."""

from __future__ import annotations

import structlog
from aiohttp import web

from bot.errors import OperatorError

log = structlog.get_logger(__name__)


async def listen(app: web.Application, host: str, port: int, *, setting: str) -> web.AppRunner:
    """Serve `app` on host:port; a clear error naming `setting` when the address cannot be used.
    No access log: the web app's would carry login tokens."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as problem:
        await runner.cleanup()
        raise OperatorError(
            f"{setting} {host}:{port} cannot be used: {problem.strerror or problem}"
        ) from None
    log.info(f"{setting.split('.')[0]}.listening", host=host, port=port)
    return runner
