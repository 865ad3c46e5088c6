"""The few client-server API calls secret storage and key backup make, over plain aiohttp with the
bot's access token (matrix-nio has neither): account data, and JSON requests with their status."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp


class AccountApiError(Exception):
    """The homeserver answered something unexpected; the message names the path and status only."""


class AccountApi:
    def __init__(
        self, http: aiohttp.ClientSession, homeserver: str, user_id: str, access_token: str
    ) -> None:
        self._http = http
        self._base = homeserver.rstrip("/")
        self.user_id = user_id
        self._headers = {"Authorization": f"Bearer {access_token}"}

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        async with self._http.request(
            method, f"{self._base}{path}", json=body, params=params, headers=self._headers
        ) as response:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                raise AccountApiError(f"{path} answered {response.status} without JSON") from None
            return response.status, answer if isinstance(answer, dict) else {}

    def _account_data_path(self, event_type: str) -> str:
        user = quote(self.user_id, safe="")
        return f"/_matrix/client/v3/user/{user}/account_data/{quote(event_type, safe='')}"

    async def get_account_data(self, event_type: str) -> dict[str, Any] | None:
        """The content, or None when the account has none of this type (or it was emptied)."""
        status, answer = await self.request("GET", self._account_data_path(event_type))
        if status == 404:
            return None
        if status != 200:
            raise AccountApiError(
                f"reading account data {event_type} failed ({status}: {answer.get('errcode')})"
            )
        return answer or None

    async def put_account_data(self, event_type: str, content: dict[str, Any]) -> None:
        status, answer = await self.request("PUT", self._account_data_path(event_type), content)
        if status != 200:
            raise AccountApiError(
                f"writing account data {event_type} failed ({status}: {answer.get('errcode')})"
            )
