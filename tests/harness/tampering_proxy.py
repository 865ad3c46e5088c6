"""A reverse proxy in front of the real Synapse that plays a malicious homeserver: it forwards
every request as it is, but hands out another device keys object for one device in the answers of
`POST /_matrix/client/v3/keys/query`. It records every request it forwarded (method, path, JSON
body), so a test can tell what the client behind it uploaded."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tests.harness.synapse import free_port

KEYS_QUERY = "/_matrix/client/v3/keys/query"
# Not forwarded either way: aiohttp sets them for the body it sends.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
    "upgrade",
}


@dataclass
class Forwarded:
    method: str
    path: str
    body: Any  # parsed JSON, or None


class TamperingProxy:
    """`forge(original)` returns the entry to serve instead of `original` for `user_id`'s
    `device_id` in keys/query answers; set `forge = None` to pass answers through untouched."""

    def __init__(
        self,
        upstream: str,
        user_id: str,
        device_id: str | None = None,
        forge: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.user_id = user_id
        self.device_id = device_id  # None: every device of user_id
        self.forge = forge
        self.requests: list[Forwarded] = []
        self.forged_answers = 0
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    def posted(self, path: str) -> list[Any]:
        return [r.body for r in self.requests if r.method == "POST" and r.path == path]

    async def __aenter__(self) -> TamperingProxy:
        # Long-poll syncs pass through: no total timeout.
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_read=120), auto_decompress=True
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(Forwarded(request.method, request.path, body))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._http.request(
            request.method,
            f"{self.upstream}{request.path_qs}",
            data=raw or None,
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        if request.method == "POST" and request.path == KEYS_QUERY and status == 200:
            payload = self._tamper(payload)
        return web.Response(body=payload, status=status, headers=out_headers)

    def _tamper(self, payload: bytes) -> bytes:
        if self.forge is None:
            return payload
        answer = json.loads(payload)
        devices = answer.get("device_keys", {}).get(self.user_id, {})
        for device_id in list(devices):
            if self.device_id is None or device_id == self.device_id:
                devices[device_id] = self.forge(devices[device_id])
                self.forged_answers += 1
        return json.dumps(answer).encode()
