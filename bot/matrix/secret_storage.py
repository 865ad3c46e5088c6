"""Secret storage (`m.secret_storage.v1.aes-hmac-sha2`), as Element keeps it: secrets live in the
account's own account data, each encrypted with keys derived from one 32-byte secret-storage key,
the recovery key. The homeserver sees only ciphertext.

- A secret named N (the account-data type it is stored under): HKDF-SHA256 of the key, with a salt
  of zeros and N as info, gives 64 bytes: an AES-256 key and an HMAC-SHA256 key. The secret's text
  is encrypted with AES-CTR under a random IV whose bit 63 is cleared (so the counter never wraps
  into the nonce half), and the HMAC is taken over the ciphertext. Stored as
  `{"encrypted": {<key id>: {"iv", "ciphertext", "mac"}}}`, base64.
- The key's description, `m.secret_storage.key.<key id>`, carries a check value: 32 zero bytes
  encrypted the same way with the empty name (`iv` and `mac`), so a wrong recovery key is told apart
  from damaged data. `m.secret_storage.default_key` names the key in use."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import string
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bot.matrix.account_api import AccountApi

ALGORITHM = "m.secret_storage.v1.aes-hmac-sha2"
DEFAULT_KEY = "m.secret_storage.default_key"
KEY_PREFIX = "m.secret_storage.key."
KEY_NAME = "community-bot recovery key"


class SecretStorageError(Exception):
    """Secret storage is missing, uses another algorithm, or does not open with this key."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise SecretStorageError("a secret-storage field is not a base64 string")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise SecretStorageError("a secret-storage field is not valid base64") from None


def derive_keys(key: bytes, name: str) -> tuple[bytes, bytes]:
    """(AES key, HMAC key) for the secret called `name`."""
    # All-zero salts of any length up to the hash's block size give the same HMAC key: the spec
    # says 32 zero bytes, matrix-js-sdk passes 8; both are this.
    okm = HKDF(
        algorithm=hashes.SHA256(), length=64, salt=bytes(32), info=name.encode("utf-8")
    ).derive(key)
    return okm[:32], okm[32:]


def _ctr(aes_key: bytes, iv: bytes):  # type: ignore[no-untyped-def]
    return Cipher(algorithms.AES(aes_key), modes.CTR(iv))


def encrypt_secret(
    key: bytes, name: str, plaintext: bytes, iv: bytes | None = None
) -> dict[str, str]:
    if iv is None:
        fresh = bytearray(os.urandom(16))
        fresh[8] &= 0x7F  # bit 63 cleared
        iv = bytes(fresh)
    aes_key, mac_key = derive_keys(key, name)
    encryptor = _ctr(aes_key, iv).encryptor()
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    mac = hmac.digest(mac_key, ciphertext, hashlib.sha256)
    return {"iv": _b64(iv), "ciphertext": _b64(ciphertext), "mac": _b64(mac)}


def decrypt_secret(key: bytes, name: str, encrypted: Any) -> bytes:
    if not isinstance(encrypted, dict):
        raise SecretStorageError(f"the secret {name} is not an encrypted object")
    iv, ciphertext, mac = (_unb64(encrypted.get(f)) for f in ("iv", "ciphertext", "mac"))
    aes_key, mac_key = derive_keys(key, name)
    if len(iv) != 16 or not hmac.compare_digest(
        mac, hmac.digest(mac_key, ciphertext, hashlib.sha256)
    ):
        raise SecretStorageError(
            f"the secret {name} does not open with this key (its MAC does not match)"
        )
    decryptor = _ctr(aes_key, iv).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def key_check(key: bytes, iv: bytes | None = None) -> dict[str, str]:
    """The `iv` and `mac` a key description carries to recognise its key."""
    checked = encrypt_secret(key, "", bytes(32), iv)
    return {"iv": checked["iv"], "mac": checked["mac"]}


def new_key_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


@dataclass(frozen=True)
class StorageKey:
    """An opened secret-storage key: its id and its 32 bytes."""

    key_id: str
    key: bytes

    def description(self) -> dict[str, Any]:
        return {"algorithm": ALGORITHM, "name": KEY_NAME, **key_check(self.key)}

    def matches(self, description: Any) -> bool:
        if not isinstance(description, dict) or description.get("algorithm") != ALGORITHM:
            return False
        if "iv" not in description or "mac" not in description:
            return False  # nothing to check against: never trusted blindly
        try:
            expected = key_check(self.key, _unb64(description["iv"]))["mac"]
            return hmac.compare_digest(_unb64(expected), _unb64(description["mac"]))
        except SecretStorageError:
            return False

    def encrypt(self, name: str, secret: str) -> dict[str, Any]:
        return {"encrypted": {self.key_id: encrypt_secret(self.key, name, secret.encode("utf-8"))}}

    def decrypt(self, name: str, content: Any) -> str:
        encrypted = content.get("encrypted") if isinstance(content, dict) else None
        if not isinstance(encrypted, dict) or self.key_id not in encrypted:
            raise SecretStorageError(f"the secret {name} is not encrypted with this key")
        try:
            return decrypt_secret(self.key, name, encrypted[self.key_id]).decode("utf-8")
        except UnicodeDecodeError:
            raise SecretStorageError(f"the secret {name} is not text") from None


class SecretStorage:
    """The account's secret storage, read and written through account data."""

    def __init__(self, api: AccountApi) -> None:
        self._api = api

    async def default_key_id(self) -> str | None:
        content = await self._api.get_account_data(DEFAULT_KEY)
        key_id = content.get("key") if content else None
        return key_id if isinstance(key_id, str) and key_id else None

    async def open(self, key: bytes) -> StorageKey:
        """The default key, checked against its description; SecretStorageError otherwise."""
        key_id = await self.default_key_id()
        if key_id is None:
            raise SecretStorageError(
                "the account has no secret storage yet; create it with `community-bot recovery-key`"
            )
        opened = StorageKey(key_id, key)
        description = await self._api.get_account_data(KEY_PREFIX + key_id)
        if description is None:
            raise SecretStorageError(f"the description of the default key {key_id} is missing")
        if description.get("algorithm") != ALGORITHM:
            raise SecretStorageError(
                f"the default key {key_id} uses {str(description.get('algorithm'))[:64]!r}, "
                f"not {ALGORITHM}"
            )
        if not opened.matches(description):
            raise SecretStorageError(
                "the recovery key does not match this account's secret storage (it was "
                "replaced, or this key belongs to another account)"
            )
        return opened

    async def create(self, key: bytes) -> StorageKey:
        """A new key, described; `make_default` once the secrets are stored under it."""
        made = StorageKey(new_key_id(), key)
        await self._api.put_account_data(KEY_PREFIX + made.key_id, made.description())
        return made

    async def make_default(self, key: StorageKey) -> None:
        await self._api.put_account_data(DEFAULT_KEY, {"key": key.key_id})

    async def get(self, key: StorageKey, name: str) -> str | None:
        content = await self._api.get_account_data(name)
        if content is None:
            return None
        return key.decrypt(name, content)

    async def put(self, key: StorageKey, name: str, secret: str) -> None:
        """Stored for `key` only: a replaced key no longer opens it."""
        await self._api.put_account_data(name, key.encrypt(name, secret))
