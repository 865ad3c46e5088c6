"""Keys that survive a lost server: the recovery key opens the account's secret storage, which
holds the bot's three cross-signing private keys and the room-key backup's private key.

- `set_up_recovery` (the `community-bot recovery-key` command) makes the recovery key once, stores
  the secrets under it and returns it to be shown once; with `rotate`, a new key replaces it and
  a new room-key backup key replaces the old one (the bot starts a new backup version with it at
  its next start). The cross-signing keys are NOT rotated: they are stored again, unchanged,
  under the new key, so whoever read secret storage with a leaked old key still holds them.
- `AccountRecovery` (the running bot) restores the cross-signing keys from secret storage when the
  data dir lost them, keeps secret storage up to date, creates the backup version, restores the
  backed-up room keys into a fresh data dir and starts the uploader.

The recovery key itself is never written anywhere by the bot and never logged. The backup's
private key is kept in the data dir too (`key-backup.json`, 0600), so a running bot backs up
without the recovery key configured; a restore needs it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets as random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from bot.errors import OperatorError
from bot.matrix.account_api import AccountApi, AccountApiError
from bot.matrix.cross_signing import USAGES, CrossSigningKeys, sign_json, unb64
from bot.matrix.room_key_backup import (
    SECRET_NAME,
    BackedUp,
    BackupError,
    BackupKey,
    RoomKeyUploader,
    create_version,
    current_version,
    restore_room_keys,
    version_public_key,
)
from bot.matrix.secret_storage import SecretStorage, SecretStorageError, StorageKey
from bot.recovery_key import decode_recovery_key, encode_recovery_key

log = structlog.get_logger(__name__)

CROSS_SIGNING_SECRETS = {usage: f"m.cross_signing.{usage}" for usage in USAGES}
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)


def _seed(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode().rstrip("=")


def _from_seed(text: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(unb64(text.strip()))


# -- the backup key kept in the data dir --------------------------------------------------------


@dataclass
class LocalBackupKey:
    """`key-backup.json`: the backup's private key and the version it backs up to (None: the bot
    creates one at its next start)."""

    key: BackupKey
    version: str | None

    @staticmethod
    def path(data_dir: Path) -> Path:
        return data_dir / "key-backup.json"

    @classmethod
    def load(cls, data_dir: Path) -> LocalBackupKey | None:
        try:
            saved = json.loads(cls.path(data_dir).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            raise OperatorError(f"{cls.path(data_dir)} is damaged; remove it") from None
        version = saved.get("version")
        return cls(BackupKey.from_base64(saved["private_key"]),
                   version if isinstance(version, str) else None)  # fmt: skip

    def save(self, data_dir: Path) -> None:
        path = self.path(data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"private_key": self.key.to_base64(), "version": self.version}, handle)
        os.replace(tmp, path)


def backed_up_path(data_dir: Path) -> Path:
    return data_dir / "key-backup-state.json"


async def store_cross_signing(
    storage: SecretStorage, key: StorageKey, keys: CrossSigningKeys
) -> int:
    """Put the three private keys in secret storage where they are missing or differ; how many."""
    written = 0
    for usage, name in CROSS_SIGNING_SECRETS.items():
        seed = _seed(keys.by_usage(usage))
        try:
            stored = await storage.get(key, name)
        except SecretStorageError:
            stored = None  # encrypted for another (older) key: replaced
        if stored is None or stored.rstrip("=") != seed:
            await storage.put(key, name, seed)
            written += 1
    return written


# -- `community-bot recovery-key` ---------------------------------------------------------------


@dataclass(frozen=True)
class RecoverySetup:
    """What `recovery-key` did. `recovery_key` is set only when a key was made now."""

    recovery_key: str | None
    key_id: str
    existed: bool


async def set_up_recovery(
    homeserver: str, user_id: str, access_token: str, data_dir: Path, *, rotate: bool = False
) -> RecoverySetup:
    keys = CrossSigningKeys.load(data_dir / "cross-signing-keys.json")
    if keys is None:
        raise OperatorError(
            f"there are no cross-signing keys in {data_dir} yet: start the bot once with "
            "matrix.encryption on (it makes them), then run this again"
        )
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        api = AccountApi(http, homeserver, user_id, access_token)
        storage = SecretStorage(api)
        existing: str | None = None
        try:
            existing = await storage.default_key_id()
            if existing is not None and not rotate:
                return RecoverySetup(None, existing, existed=True)
            raw = random.token_bytes(32)
            key = await storage.create(raw)
            await store_cross_signing(storage, key, keys)
            # The backup key: the one the bot already uses, else a new one; always a new one on
            # rotation, since whoever read secret storage with a leaked recovery key holds the old
            # one and would decrypt every room key backed up under it. The bot makes the new
            # key's backup version at its next start (`start_backup`) and uploads every room
            # key again under it; the old version stays, readable only with the old key.
            local = None if rotate else LocalBackupKey.load(data_dir)
            local = local or LocalBackupKey(BackupKey.generate(), None)
            await storage.put(key, SECRET_NAME, local.key.to_base64())
            local.save(data_dir)
            await storage.make_default(key)  # last: a key is in use only once it holds everything
        except AccountApiError as problem:
            again = " --rotate" if existing is not None else ""
            raise OperatorError(
                f"the homeserver refused: {problem}. Nothing is lost (the data dir holds every "
                f"key): run `community-bot recovery-key{again}` again"
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as problem:
            raise OperatorError(f"cannot reach the homeserver {homeserver}: {problem}") from None
    log.info("crypto.recovery_key_made", key_id=key.key_id, rotated=existing is not None)
    return RecoverySetup(encode_recovery_key(raw), key.key_id, existed=existing is not None)


# -- the running bot ----------------------------------------------------------------------------


class AccountRecovery:
    """One per run. `close()` ends its HTTP session (the uploader uses it while the bot runs)."""

    def __init__(
        self, homeserver: str, client: Any, data_dir: Path, *, recovery_key: str | None
    ) -> None:
        self._client = client
        self._data_dir = data_dir
        self._raw_key = decode_recovery_key(recovery_key) if recovery_key else None
        self._http = aiohttp.ClientSession(timeout=HTTP_TIMEOUT)
        self.api = AccountApi(self._http, homeserver, client.user_id, client.access_token)
        self.storage = SecretStorage(self.api)
        self._key: StorageKey | None = None
        self._opened = False
        self.restored_sessions = 0
        self.uploader: RoomKeyUploader | None = None
        self._task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._http.close()

    async def secure(self) -> None:
        """After cross-signing: keep secret storage current, restore room keys into a fresh data
        dir, and back up room keys from now on. Trouble is logged; the bot serves regardless."""
        try:
            await self.keep_cross_signing_stored()
            uploader = await self.start_backup()
        except (AccountApiError, SecretStorageError, BackupError, OperatorError) as problem:
            log.error("crypto.key_backup_failed", error=str(problem))
            return
        except (TimeoutError, aiohttp.ClientError, OSError) as problem:
            log.error("crypto.key_backup_failed", error=f"{type(problem).__name__}: {problem}")
            return
        if uploader is not None:
            from nio import ForwardedRoomKeyEvent, RoomKeyEvent

            self._client.add_to_device_callback(
                uploader.room_key_arrived, (RoomKeyEvent, ForwardedRoomKeyEvent)
            )
            self._task = asyncio.create_task(uploader.run(), name="key backup")

    async def storage_key(self) -> StorageKey | None:
        """The opened secret-storage key (None without a recovery key, or when it does not open:
        that is logged, never the key)."""
        if self._raw_key is None or self._opened:
            return self._key
        self._opened = True
        try:
            self._key = await self.storage.open(self._raw_key)
        except SecretStorageError as problem:
            log.error("crypto.secret_storage_unusable", reason=str(problem))
        return self._key

    async def restore_cross_signing(self) -> CrossSigningKeys | None:
        """CrossSigning's restore hook: the three private keys from secret storage."""
        key = await self.storage_key()
        if key is None:
            return None
        try:
            seeds = [await self.storage.get(key, CROSS_SIGNING_SECRETS[u]) for u in USAGES]
            if any(seed is None for seed in seeds):
                log.error("crypto.cross_signing_not_in_secret_storage")
                return None
            keys = CrossSigningKeys(*(_from_seed(seed) for seed in seeds if seed is not None))
        except (SecretStorageError, ValueError) as problem:
            log.error("crypto.cross_signing_restore_failed", reason=str(problem))
            return None
        log.info("crypto.cross_signing_restored")
        return keys

    async def keep_cross_signing_stored(self) -> None:
        """After cross-signing: secret storage holds exactly our keys (e.g. made after the key)."""
        key = await self.storage_key()
        keys = CrossSigningKeys.load(self._data_dir / "cross-signing-keys.json")
        if key is not None and keys is not None:
            if written := await store_cross_signing(self.storage, key, keys):
                log.info("crypto.cross_signing_stored", secrets=written)

    async def start_backup(self) -> RoomKeyUploader | None:
        """Restore room keys into a fresh data dir, then the uploader (None: no backup)."""
        local = LocalBackupKey.load(self._data_dir)
        fresh = local is None
        if local is None:
            stored = await self._stored_backup_key()
            if stored is None:
                log.info("crypto.key_backup_off",
                         reason="no backup key: run `community-bot recovery-key`")  # fmt: skip
                return None
            local = LocalBackupKey(stored, None)
        server = await current_version(self.api)
        server_key = version_public_key(server) if server else None
        if server is not None and server_key == local.key.public_key:
            version = str(server["version"])
        elif server is not None and (local.version is not None or fresh):
            # The current backup is another key's: another client replaced ours. Followed only
            # when secret storage holds that key (Element's "reset backup" puts it there).
            adopted = await self._stored_backup_key()
            if adopted is None or adopted.public_key != server_key:
                log.error(
                    "crypto.key_backup_off",
                    reason="the homeserver's current key backup is not ours and its key is not "
                    "in secret storage; `community-bot recovery-key --rotate` makes a new one",
                    server_version=str(server.get("version"))[:32],
                )
                return None
            local, version = LocalBackupKey(adopted, None), str(server["version"])
            log.info("crypto.key_backup_adopted", version=version)
        else:  # none yet, or a new key from `recovery-key`
            version = await create_version(self.api, self._signed_auth_data(local.key))
            log.info("crypto.key_backup_created", version=version)
        backed_up = BackedUp(backed_up_path(self._data_dir), version)
        if fresh or local.version != version:
            imported, failed, present = await restore_room_keys(
                self._client, self.api, local.key, version
            )
            backed_up.add(present)
            backed_up.save()
            self.restored_sessions += imported
            log.info("crypto.room_keys_restored", sessions=imported, failed=failed,
                     version=version)  # fmt: skip
        local.version = version
        local.save(self._data_dir)  # only now: a failed restore is tried again at the next start
        self.uploader = RoomKeyUploader(self._client, self.api, local.key, backed_up)
        return self.uploader

    async def _stored_backup_key(self) -> BackupKey | None:
        key = await self.storage_key()
        if key is None:
            return None
        try:
            text = await self.storage.get(key, SECRET_NAME)
            return BackupKey.from_base64(text) if text else None
        except (SecretStorageError, BackupError) as problem:
            log.error("crypto.backup_key_unreadable", reason=str(problem))
            return None

    def _signed_auth_data(self, key: BackupKey) -> dict[str, Any]:
        """Signed by this device (its Olm ed25519 key) and, when present, the master key."""
        client = self._client
        auth: dict[str, Any] = {"public_key": key.public_key}
        device_signature = client.olm.sign_json(auth)
        keys = CrossSigningKeys.load(self._data_dir / "cross-signing-keys.json")
        signed = sign_json(auth, keys.master, client.user_id) if keys is not None else dict(auth)
        signatures = signed.setdefault("signatures", {}).setdefault(client.user_id, {})
        signatures[f"ed25519:{client.device_id}"] = device_signature
        return signed
