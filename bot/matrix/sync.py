"""The sync loop: never dies silently. It persists its token after each batch is dispatched, skips
the backlog on a fresh start, and backs off (logging why) while the homeserver is unreachable."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import structlog
from nio import AsyncClient, SyncError, SyncResponse

from bot.matrix.client import CONNECT_ERRORS, MatrixLoginError
from bot.matrix.dispatch import Dispatcher
from bot.metrics import NO_METRICS, Metrics
from bot.store.events import EventLedger

log = structlog.get_logger(__name__)

LONG_POLL_MS = 30_000
TOKEN_SAVED_EVERY_S = 2.0
MAX_BACKOFF_S = 60.0
FIRST_SYNC_TIMEOUT_S = 300.0
# On a fresh start only the state matters; one event per room keeps the first sync small.
# The bot reads no typing notices, read receipts or presence: left out, they would wake its sync
# for every receipt a member's client sends, for nothing.
_QUIET: dict[str, Any] = {"presence": {"types": []}}
_NO_EPHEMERAL: dict[str, Any] = {"ephemeral": {"types": []}}
FRESH_START_FILTER: dict[str, Any] = {
    **_QUIET, "room": {"timeline": {"limit": 1}, **_NO_EPHEMERAL},
}  # fmt: skip
# Synapse sends 10 timeline events per room by default: after downtime or in a burst, older
# commands and joins would be cut off.
SYNC_FILTER: dict[str, Any] = {**_QUIET, "room": {"timeline": {"limit": 100}, **_NO_EPHEMERAL}}


class SyncLoop:
    def __init__(
        self,
        client: AsyncClient,
        ledger: EventLedger,
        dispatcher: Dispatcher,
        *,
        encryption: bool,
        trust: str = "tofu",
        long_poll_ms: int = LONG_POLL_MS,
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._dispatcher = dispatcher
        self._encryption = encryption
        self._trust = trust
        self._long_poll_ms = long_poll_ms
        self.ready = asyncio.Event()  # set after the first successful sync
        self._unsaved: str | None = None  # the newest token not written yet
        self._saving: asyncio.Task[None] | None = None
        self.last_synced: float | None = None  # time.monotonic() of the last batch handled
        self.metrics: Metrics = NO_METRICS
        self._first_upload: asyncio.Task[None] | None = None
        self._keys_up = asyncio.Event()  # this device's keys are on the homeserver

    def _save_soon(self, token: str) -> None:
        """Write the token in the background, at most every TOKEN_SAVED_EVERY_S: the next sync
        need not wait for the database. Safe to lose on a crash: a batch fetched again finds its
        events already claimed (and greetings, edits and redactions are idempotent)."""
        self._unsaved = token
        if self._saving is None or self._saving.done():
            self._saving = asyncio.create_task(self._save_unsaved())

    async def _save_unsaved(self) -> None:
        while self._unsaved is not None:
            token, self._unsaved = self._unsaved, None
            try:
                await self._ledger.save_sync_token(token)
            except Exception:  # the database is away: the next batch tries again
                log.exception("matrix.sync_token_not_saved")
                return
            await asyncio.sleep(TOKEN_SAVED_EVERY_S)  # later tokens wait and go as one

    async def run(self) -> None:
        try:
            await self._run()
        finally:  # stopping: the newest token is written now
            if self._first_upload is not None:
                self._first_upload.cancel()
            if self._saving is not None:
                self._saving.cancel()
            if self._unsaved is not None:
                await asyncio.shield(self._ledger.save_sync_token(self._unsaved))

    async def _run(self) -> None:
        if self._encryption and self._client.should_upload_keys:
            # A new device's keys go up while the first sync is fetched and handled (joins
            # included), not after: the next sync, where the first commands come, starts sooner.
            self._first_upload = asyncio.create_task(self._upload_first_keys())
        else:
            self._keys_up.set()
        token = await self._ledger.sync_token()
        fresh = token is None
        first = True
        failures = 0
        while True:
            try:
                response = await asyncio.wait_for(
                    self._client.sync(
                        timeout=0 if first else self._long_poll_ms,
                        since=token,
                        full_state=first or None,
                        sync_filter=FRESH_START_FILTER if fresh else SYNC_FILTER,
                    ),
                    # nio sets no client timeout on a full-state sync: never wait forever.
                    timeout=FIRST_SYNC_TIMEOUT_S if first else self._long_poll_ms / 1000 + 30,
                )
            except CONNECT_ERRORS as problem:
                response = None
                reason = (
                    f"{type(problem).__name__}: {problem}"
                    if str(problem)
                    else type(problem).__name__
                )
            else:
                reason = ""
                if isinstance(response, SyncError):
                    if response.status_code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
                        raise MatrixLoginError(
                            "the homeserver no longer accepts the bot's access token "
                            f"({response.status_code}); log in again"
                        )
                    reason = f"{response.status_code}: {response.message}"
                    response = None
            if response is None:
                failures += 1
                await self._back_off(failures, reason)
                continue
            assert isinstance(response, SyncResponse)
            if failures:
                log.info("matrix.sync_recovered", after_attempts=failures)
                failures = 0
            try:
                await self._dispatcher.handle_sync(response, backlog=fresh)
                token = response.next_batch
                if fresh:  # the backlog is skipped for good only once this is written
                    await self._ledger.save_sync_token(token)
                else:
                    self._save_soon(token)
            except Exception:
                # A bug or a database hiccup must not end the loop. The token is not saved, so the
                # batch comes again; events already claimed are not answered twice.
                log.exception("matrix.sync_batch_failed")
                failures += 1
                await self._back_off(failures, "batch handling failed")
                continue
            first = fresh = False
            self.last_synced = time.monotonic()
            self.metrics.synced(response)
            if self._encryption:
                await self._crypto_housekeeping()
            self.ready.set()

    async def keys_published(self) -> None:
        """Returns once this device's keys are on the homeserver, or, should their upload fail,
        once the first sync is done (what needs the keys then says so)."""
        waits = [
            asyncio.ensure_future(self._keys_up.wait()),
            asyncio.ensure_future(self.ready.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _upload_first_keys(self) -> None:
        await self._client.keys_upload()
        if not self._client.should_upload_keys:
            self._keys_up.set()

    async def _back_off(self, failures: int, reason: str) -> None:
        wait = min(MAX_BACKOFF_S, 2 ** min(failures - 1, 6)) * random.uniform(0.8, 1.2)
        log.warning(
            "matrix.sync_failed", reason=reason, attempt=failures, retry_in_s=round(wait, 1)
        )
        await asyncio.sleep(wait)

    def _trust_new_devices(self) -> None:
        """Trust on first use: a device seen for the first time is trusted with the keys it has
        then; nio keeps those keys and ignores (with a warning) any later change."""
        client = self._client
        for device in client.device_store:
            if not (device.verified or device.blacklisted or device.ignored or device.deleted):
                client.verify_device(device)
                log.info("crypto.device_trusted", user_id=device.user_id, device_id=device.id)

    async def _crypto_housekeeping(self) -> None:
        """What nio's sync_forever does between syncs: keep device and one-time keys flowing."""
        client = self._client
        try:
            if self._first_upload is not None:
                uploading, self._first_upload = self._first_upload, None
                await uploading
            if client.should_upload_keys:
                await client.keys_upload()
            if client.should_query_keys:
                await client.keys_query()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())
            await client.send_to_device_messages()
            if self._trust == "tofu":
                self._trust_new_devices()
        except CONNECT_ERRORS as problem:
            log.warning("matrix.crypto_housekeeping_failed", error=str(problem))
