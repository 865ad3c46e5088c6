"""Logging the bot in: access token or password, one device for the bot's whole life."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import structlog
from nio import AsyncClient, AsyncClientConfig, LoginResponse, WhoamiResponse
from nio.crypto import ENCRYPTION_ENABLED
from nio.exceptions import LocalProtocolError
from nio.store import DefaultStore

from bot.errors import OperatorError
from bot.matrix.credentials import Credentials, load_credentials, save_credentials

log = structlog.get_logger(__name__)

# Everything that means "the homeserver could not be reached or hung up", not "it said no".
CONNECT_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError, TimeoutError)


class MatrixLoginError(OperatorError):
    """The homeserver refused the bot's credentials; retrying will not help."""


if ENCRYPTION_ENABLED:

    class CryptoStore(DefaultStore):
        """nio's store, minus a database round trip on the event loop for every sync: nio
        saves the set of encrypted rooms after each one, even when no room became encrypted."""

        def save_encrypted_rooms(self, rooms) -> None:  # type: ignore[no-untyped-def]
            if rooms:
                super().save_encrypted_rooms(rooms)


def build_client(homeserver: str, user_id: str, data_dir: Path, *, encryption: bool) -> AsyncClient:
    store = data_dir / "crypto"
    if encryption:
        store.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = AsyncClientConfig(
        # Retries are ours: the sync loop backs off, the sender honours retry_after_ms in order.
        max_limit_exceeded=0,
        max_timeouts=0,
        encryption_enabled=encryption,
        **({"store": CryptoStore} if encryption else {}),
        store_sync_tokens=False,
        request_timeout=30,
    )
    return AsyncClient(
        homeserver, user_id, store_path=str(store) if encryption else "", config=config
    )


async def _whoami(client: AsyncClient) -> WhoamiResponse | None:
    """None when the token is not (or no longer) accepted."""
    response = await client.whoami()
    if isinstance(response, WhoamiResponse):
        return response
    if response.status_code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN", "M_FORBIDDEN"):
        return None
    raise ConnectionError(
        f"homeserver answered whoami with {response.status_code}: {response.message}"
    )


def _restore(client: AsyncClient, user_id: str, device_id: str, token: str) -> None:
    try:
        client.restore_login(user_id, device_id, token)
    except LocalProtocolError as problem:
        raise MatrixLoginError(f"cannot open the encryption store: {problem}") from None


async def log_in(
    client: AsyncClient,
    *,
    data_dir: Path,
    password: str | None,
    access_token: str | None,
    device_name: str,
) -> str:
    """Log in and return the device id. Raises MatrixLoginError when credentials are refused."""
    homeserver, user_id = client.homeserver, client.user
    if access_token:
        client.access_token = access_token
        who = await _whoami(client)
        if who is None:
            raise MatrixLoginError("the homeserver rejected matrix.access_token")
        if who.user_id != user_id:
            raise MatrixLoginError(
                f"matrix.access_token belongs to {who.user_id}, not to matrix.user_id {user_id}"
            )
        if not who.device_id:
            raise MatrixLoginError("matrix.access_token has no device; create it with a login")
        _restore(client, user_id, who.device_id, access_token)
        log.info(
            "matrix.logged_in", user_id=user_id, device_id=who.device_id, method="access_token"
        )
        return who.device_id

    assert password is not None
    saved = load_credentials(data_dir, homeserver, user_id)
    if saved is not None:
        client.access_token = saved.access_token
        client.device_id = saved.device_id
        if await _whoami(client) is not None:
            _restore(client, user_id, saved.device_id, saved.access_token)
            log.info("matrix.logged_in", user_id=user_id, device_id=saved.device_id, method="saved")
            return saved.device_id
        log.warning("matrix.saved_token_rejected", device_id=saved.device_id)
        client.access_token = ""
        client.device_id = saved.device_id  # log in again on the same device, keeping its keys

    response = await client.login(password=password, device_name=device_name)
    if not isinstance(response, LoginResponse):
        if response.status_code in ("M_FORBIDDEN", "M_USER_DEACTIVATED", "M_INVALID_USERNAME"):
            raise MatrixLoginError(
                f"the homeserver refused the login for {user_id}: {response.message}"
            )
        raise ConnectionError(f"login failed: {response.status_code} {response.message}")
    save_credentials(
        data_dir, Credentials(homeserver, user_id, response.device_id, response.access_token)
    )
    log.info("matrix.logged_in", user_id=user_id, device_id=response.device_id, method="password")
    return response.device_id
