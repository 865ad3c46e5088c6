"""Server-side room-key backup (`m.megolm_backup.v1.curve25519-aes-sha2`): every room key the bot
receives goes, encrypted to the backup's public key, to the homeserver's `/room_keys/keys`; a bot
that lost its data dir but has the backup's private key (from secret storage) downloads them and
reads earlier messages again.

Each session is encrypted to the backup's Curve25519 public key with a fresh ephemeral key
(ECDH, HKDF-SHA256 to an AES-256-CBC key, an HMAC key and an IV; a truncated HMAC), as the spec
describes; vodozemac's PkEncryption/PkDecryption do exactly that. The backup version's `auth_data`
is signed by the bot's device and its master cross-signing key, so the member's own clients
(Element) and the bot's next device trust it.

Uploads are batched: a room key arriving wakes the uploader, which waits a moment for its
siblings (a member's client shares one key per room, many at once), then sends everything not
yet backed up, in pages. What is backed up is remembered in the data dir, per backup version."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import vodozemac

from bot.matrix.account_api import AccountApi, AccountApiError

log = structlog.get_logger(__name__)

ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
SECRET_NAME = "m.megolm_backup.v1"  # noqa: S105 - the private key's name in secret storage
MEGOLM = "m.megolm.v1.aes-sha2"
BATCH_DELAY_S = 1.0  # how long a first room key waits for the others of its burst
PAGE = 200  # sessions per upload request
RETRY_MAX_S = 300.0


class BackupError(Exception):
    """The backup cannot be used (another key owns it, or an answer made no sense)."""


@dataclass(frozen=True)
class BackupKey:
    """The backup's Curve25519 key pair (the private half only where it may be)."""

    secret: vodozemac.Curve25519SecretKey

    @classmethod
    def generate(cls) -> BackupKey:
        return cls(vodozemac.Curve25519SecretKey())

    @classmethod
    def from_base64(cls, text: str) -> BackupKey:
        try:
            return cls(vodozemac.Curve25519SecretKey.from_base64(text.rstrip("=")))
        except Exception:
            raise BackupError("the stored backup key is not a Curve25519 key") from None

    def to_base64(self) -> str:
        """Unpadded base64 of the 32 private bytes (how secret storage holds it)."""
        return self.secret.to_base64()

    @property
    def public_key(self) -> str:
        return self.secret.public_key().to_base64()

    def encrypt(self, session: dict[str, Any]) -> dict[str, str]:
        message = vodozemac.PkEncryption.from_key(self.secret.public_key()).encrypt(
            json.dumps(session, separators=(",", ":")).encode("utf-8")
        )
        return {
            "ephemeral": _b64(message.ephemeral_key),
            "ciphertext": _b64(message.ciphertext),
            "mac": _b64(message.mac),
        }

    def decrypt(self, session_data: Any) -> dict[str, Any]:
        if not isinstance(session_data, dict):
            raise BackupError("session_data is not an object")
        try:
            message = vodozemac.Message.from_base64(
                *(str(session_data[f]).rstrip("=") for f in ("ciphertext", "mac", "ephemeral"))
            )
            plain = vodozemac.PkDecryption.from_key(self.secret).decrypt(message)
            session = json.loads(plain)
        except Exception as problem:  # vodozemac raises its own types
            raise BackupError(
                f"a backed-up session does not decrypt: {type(problem).__name__}"
            ) from None
        if not isinstance(session, dict):
            raise BackupError("a backed-up session is not an object")
        return session


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode().rstrip("=")


def session_payload(session: Any) -> dict[str, Any]:
    """What the spec backs up of a nio InboundGroupSession, before encryption."""
    return {
        "algorithm": MEGOLM,
        "sender_key": session.sender_key,
        "sender_claimed_keys": {"ed25519": session.ed25519},
        "forwarding_curve25519_key_chain": list(session.forwarding_chain),
        "session_key": session.export_session(session.first_known_index),
    }


def key_backup_data(session: Any, key: BackupKey) -> dict[str, Any]:
    return {
        "first_message_index": session.first_known_index,
        "forwarded_count": len(session.forwarding_chain),
        "is_verified": False,  # nio does not know whether the sending device was verified
        "session_data": key.encrypt(session_payload(session)),
    }


# -- the backup version on the homeserver ----------------------------------------------------------


async def current_version(api: AccountApi) -> dict[str, Any] | None:
    status, answer = await api.request("GET", "/_matrix/client/v3/room_keys/version")
    if status == 404:
        return None
    if status != 200:
        raise AccountApiError(f"room_keys/version answered {status}: {answer.get('errcode')}")
    return answer


async def create_version(api: AccountApi, auth_data: dict[str, Any]) -> str:
    """`auth_data`: `{"public_key": …, "signatures": …}`, already signed."""
    body = {"algorithm": ALGORITHM, "auth_data": auth_data}
    status, answer = await api.request("POST", "/_matrix/client/v3/room_keys/version", body)
    version = answer.get("version")
    if status != 200 or not isinstance(version, str):
        raise AccountApiError(f"creating a key backup answered {status}: {answer.get('errcode')}")
    return version


def version_public_key(version: dict[str, Any]) -> str | None:
    auth = version.get("auth_data")
    key = auth.get("public_key") if isinstance(auth, dict) else None
    if version.get("algorithm") != ALGORITHM or not isinstance(key, str):
        return None
    return key.rstrip("=")


# -- backing up --------------------------------------------------------------------------------


class BackedUp:
    """The (room id, session id) pairs in one backup version, kept in a file of the data dir."""

    def __init__(self, path: Path, version: str) -> None:
        self.path = path
        self.version = version
        self._done: set[tuple[str, str]] = set()
        try:
            saved = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            saved = {}
        if isinstance(saved, dict) and saved.get("version") == version:
            self._done = {
                (room, session)
                for room, sessions in saved.get("rooms", {}).items()
                for session in sessions
            }

    def __contains__(self, item: tuple[str, str]) -> bool:
        return item in self._done

    def __len__(self) -> int:
        return len(self._done)

    def add(self, items: Iterable[tuple[str, str]]) -> None:
        self._done.update(items)

    def save(self) -> None:
        rooms: dict[str, list[str]] = {}
        for room, session in sorted(self._done):
            rooms.setdefault(room, []).append(session)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"version": self.version, "rooms": rooms}, handle)
        os.replace(tmp, self.path)


class RoomKeyUploader:
    """Backs up the room keys in matrix-nio's store, soon after they arrive."""

    def __init__(
        self,
        client: Any,
        api: AccountApi,
        key: BackupKey,
        backed_up: BackedUp,
        *,
        batch_delay_s: float = BATCH_DELAY_S,
    ) -> None:
        self._client = client
        self._api = api
        self._key = key
        self.backed_up = backed_up
        self._batch_delay_s = batch_delay_s
        self._wake = asyncio.Event()
        self._wake.set()  # whatever arrived before we started goes first
        self.uploaded = 0  # sessions sent by this process (for tests and the log)
        self.stopped_reason: str | None = None

    def room_key_arrived(self, *_: Any) -> None:
        """A nio to-device callback for RoomKeyEvent / ForwardedRoomKeyEvent."""
        self._wake.set()

    def pending(self) -> list[Any]:
        store = getattr(getattr(self._client, "olm", None), "inbound_group_store", None)
        if store is None:
            return []
        return [s for s in store if (s.room_id, s.id) not in self.backed_up]

    async def run(self) -> None:
        """Never ends while the bot runs (an unusable backup parks it, logged)."""
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.stopped_reason is not None:
                continue
            await asyncio.sleep(self._batch_delay_s)
            try:
                await self.upload_pending()
                failures = 0
            except BackupError as problem:
                self.stopped_reason = str(problem)
                log.error("crypto.key_backup_stopped", reason=str(problem))
            except Exception as problem:  # the homeserver is away: try again, later and later
                failures += 1
                wait = min(RETRY_MAX_S, 2.0**failures)
                log.warning("crypto.key_backup_failed", error=str(problem)[:200],
                            retry_in_s=wait)  # fmt: skip
                await asyncio.sleep(wait)
                self._wake.set()

    async def upload_pending(self) -> int:
        sessions = self.pending()
        for start in range(0, len(sessions), PAGE):
            page = sessions[start : start + PAGE]
            rooms: dict[str, dict[str, Any]] = {}
            for session in page:
                rooms.setdefault(session.room_id, {"sessions": {}})["sessions"][session.id] = (
                    key_backup_data(session, self._key)
                )
            status, answer = await self._api.request(
                "PUT",
                "/_matrix/client/v3/room_keys/keys",
                {"rooms": rooms},
                params={"version": self.backed_up.version},
            )
            if status == 403 and answer.get("errcode") == "M_WRONG_ROOM_KEYS_VERSION":
                raise BackupError(
                    f"backup version {self.backed_up.version} was replaced on the homeserver "
                    f"(now {str(answer.get('current_version'))[:32]}); restart the bot to follow"
                )
            if status != 200:
                raise AccountApiError(f"room_keys/keys answered {status}: {answer.get('errcode')}")
            self.backed_up.add((s.room_id, s.id) for s in page)
            self.backed_up.save()
            self.uploaded += len(page)
        if sessions:
            log.info("crypto.room_keys_backed_up", sessions=len(sessions),
                     version=self.backed_up.version, total=len(self.backed_up))  # fmt: skip
        return len(sessions)


# -- restoring ---------------------------------------------------------------------------------


async def restore_room_keys(
    client: Any, api: AccountApi, key: BackupKey, version: str
) -> tuple[int, int, list[tuple[str, str]]]:
    """Import every session of the backup into nio's store. Returns (imported, failed, the
    (room id, session id) pairs now known to be in the backup)."""
    from nio.crypto.sessions import InboundGroupSession

    status, answer = await api.request(
        "GET", "/_matrix/client/v3/room_keys/keys", params={"version": version}
    )
    if status != 200:
        raise AccountApiError(
            f"downloading the key backup answered {status}: {answer.get('errcode')}"
        )
    olm = client.olm
    imported = failed = 0
    present: list[tuple[str, str]] = []
    rooms = answer.get("rooms")
    for room_id, room in rooms.items() if isinstance(rooms, dict) else []:
        sessions = room.get("sessions") if isinstance(room, dict) else None
        for session_id, data in sessions.items() if isinstance(sessions, dict) else []:
            try:
                payload = key.decrypt(data.get("session_data") if isinstance(data, dict) else None)
                if payload.get("algorithm") != MEGOLM:
                    raise BackupError("not a megolm session")
                session = InboundGroupSession.import_session(
                    payload["session_key"],
                    payload["sender_claimed_keys"]["ed25519"],
                    payload["sender_key"],
                    room_id,
                    list(payload.get("forwarding_curve25519_key_chain") or []),
                )
                if session.id != session_id:
                    raise BackupError("the session id does not match its key")
            except Exception as problem:  # one bad entry must not stop the others
                failed += 1
                log.warning("crypto.backup_session_skipped", room_id=room_id,
                            session_id=str(session_id)[:64], error=str(problem)[:200])  # fmt: skip
                continue
            if olm.inbound_group_store.add(session):
                olm.save_inbound_group_session(session)
            imported += 1
            present.append((room_id, session_id))
    return imported, failed, present
