"""Cross-signing for the bot's own device (matrix-nio has none). On first start the bot makes its
master, self-signing and user-signing keys, uploads them (with user-interactive auth by password
when the homeserver asks), and signs its device with the self-signing key. Element then shows no
"unsigned device" warning, and clients that only share keys with cross-signed devices talk to it.

The private keys stay in the data dir (mode 0600) and are reused across restarts. They are never
regenerated silently: when the server holds a master key that is not ours, the bot says so and
leaves it alone.

The homeserver is not trusted with what gets signed: the device keys it returns for the bot's
device are signed only when they are exactly the bot's own Olm identity keys (ed25519 and
curve25519), for the bot's user and device id, and carry that device's own signature. Anything else
(an attacker's keys slipped into the answer) is refused and logged, even when it already carries a
signature by our self-signing key."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

log = structlog.get_logger(__name__)

USAGES = ("master", "self_signing", "user_signing")


def canonical_json(value: Any) -> bytes:
    """Matrix canonical JSON: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def public_key(private: Ed25519PrivateKey) -> str:
    return b64(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def sign_json(value: dict[str, Any], private: Ed25519PrivateKey, user_id: str) -> dict[str, Any]:
    """`value` with this key's signature added (signatures and unsigned are not signed)."""
    unsigned = {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}
    signature = b64(private.sign(canonical_json(unsigned)))
    signed = dict(value)
    signatures = {k: dict(v) for k, v in value.get("signatures", {}).items()}
    signatures.setdefault(user_id, {})[f"ed25519:{public_key(private)}"] = signature
    signed["signatures"] = signatures
    return signed


def verify_json(
    value: dict[str, Any], user_id: str, key_b64: str, key_id: str | None = None
) -> bool:
    """Whether `value` carries a valid signature by `key_b64`, listed under `key_id`
    (`ed25519:<key_b64>` for cross-signing keys; `ed25519:<device_id>` for a device's own key)."""
    signatures = value.get("signatures")
    by_user = signatures.get(user_id) if isinstance(signatures, dict) else None
    signature = by_user.get(key_id or f"ed25519:{key_b64}") if isinstance(by_user, dict) else None
    if not signature or not isinstance(signature, str):
        return False
    unsigned = {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}
    try:
        Ed25519PublicKey.from_public_bytes(unb64(key_b64)).verify(
            unb64(signature), canonical_json(unsigned)
        )
    except Exception:
        return False
    return True


# Brings back the private keys from elsewhere (secret storage) when the data dir lost them.
Restore = Callable[[], Awaitable["CrossSigningKeys | None"]]


class CrossSigningError(Exception):
    """Cross-signing could not be set up; the bot works on, with an unsigned device."""


@dataclass
class CrossSigningKeys:
    master: Ed25519PrivateKey
    self_signing: Ed25519PrivateKey
    user_signing: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> CrossSigningKeys:
        return cls(
            Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        )

    def by_usage(self, usage: str) -> Ed25519PrivateKey:
        return getattr(self, usage)

    def save(self, path: Path) -> None:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seeds = {
            usage: b64(
                self.by_usage(usage).private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            )
            for usage in USAGES
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(seeds, handle)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> CrossSigningKeys | None:
        try:
            seeds = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(*(Ed25519PrivateKey.from_private_bytes(unb64(seeds[u])) for u in USAGES))

    def upload_body(self, user_id: str) -> dict[str, Any]:
        def key_object(usage: str) -> dict[str, Any]:
            pub = public_key(self.by_usage(usage))
            return {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{pub}": pub}}

        return {
            "master_key": key_object("master"),
            "self_signing_key": sign_json(key_object("self_signing"), self.master, user_id),
            "user_signing_key": sign_json(key_object("user_signing"), self.master, user_id),
        }


class CrossSigning:
    def __init__(
        self,
        homeserver: str,
        user_id: str,
        device_id: str,
        access_token: str,
        data_dir: Path,
        *,
        identity_keys: Mapping[str, str],
    ) -> None:
        """`identity_keys`: the public keys of the bot's own Olm account (`ed25519`, `curve25519`;
        with matrix-nio `client.olm.account.identity_keys`): the only device keys ever signed."""
        self._base = homeserver.rstrip("/")
        self._user_id = user_id
        self._device_id = device_id
        self._identity_keys = {
            algorithm: identity_keys.get(algorithm) for algorithm in ("ed25519", "curve25519")
        }
        self._headers = {"Authorization": f"Bearer {access_token}"}
        self.path = data_dir / "cross-signing-keys.json"

    async def _request(
        self, http: aiohttp.ClientSession, method: str, path: str, body: dict | None = None
    ):  # type: ignore[no-untyped-def,type-arg]
        async with http.request(
            method, f"{self._base}{path}", json=body, headers=self._headers
        ) as response:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                raise CrossSigningError(f"{path} answered {response.status} without JSON") from None
            return response.status, answer if isinstance(answer, dict) else {}

    async def _server_keys(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        status, answer = await self._request(
            http, "POST", "/_matrix/client/v3/keys/query", {"device_keys": {self._user_id: []}}
        )
        if status != 200:
            raise CrossSigningError(f"keys/query answered {status}: {answer}")
        return answer

    async def ensure(self, password: str | None, restore: Restore | None = None) -> str:
        """Set up or confirm cross-signing; returns what happened (for the log and tests).
        `restore` is asked for the private keys when the data dir has none but the homeserver
        has a master key; they are used only when all three match the homeserver's."""
        if not all(isinstance(key, str) and key for key in self._identity_keys.values()):
            raise CrossSigningError(
                f"the identity keys of device {self._device_id} are unknown; not cross-signing"
            )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            server = await self._server_keys(http)
            server_master = server.get("master_keys", {}).get(self._user_id)
            keys = CrossSigningKeys.load(self.path)
            if keys is None and server_master is not None:
                keys = await restore() if restore is not None else None
                if keys is None:
                    raise CrossSigningError(
                        f"the homeserver already has cross-signing keys for {self._user_id}, but "
                        f"{self.path} is missing; not replacing them silently. Restore the file, "
                        "set a matching matrix.recovery_key, or reset cross-signing for this "
                        "account and delete nothing else"
                    )
                self._check_restored(keys, server)
                keys.save(self.path)
                outcome = "restored"
            elif keys is None:
                keys = CrossSigningKeys.generate()
                # Saved before the upload: if its answer is lost, the next start finds these
                # keys on both sides (or uploads them again), instead of refusing forever.
                keys.save(self.path)
                await self._upload_keys(http, keys, password)
                outcome = "created"
            else:
                ours = public_key(keys.master)
                if server_master is None:
                    await self._upload_keys(http, keys, password)
                    outcome = "uploaded"
                elif f"ed25519:{ours}" not in server_master.get("keys", {}):
                    raise CrossSigningError(
                        "the homeserver's master cross-signing key is not the one in "
                        f"{self.path}; someone reset cross-signing for {self._user_id}. Leaving it alone"
                    )
                else:
                    outcome = "kept"
            device = server.get("device_keys", {}).get(self._user_id, {}).get(self._device_id)
            if device is None:
                server = await self._server_keys(http)
                device = server.get("device_keys", {}).get(self._user_id, {}).get(self._device_id)
            if device is None:
                raise CrossSigningError(
                    f"device {self._device_id} has no keys on the homeserver yet"
                )
            already_signed = isinstance(device, dict) and verify_json(
                device, self._user_id, public_key(keys.self_signing)
            )
            # Checked whether signed or not: a signed device with keys that are not ours is
            # reported, not trusted.
            ours = self._verified_device(device, already_signed=already_signed)
            if not already_signed:
                await self._sign_device(http, keys, ours)
                outcome += ", device signed"
            else:
                outcome += ", device already signed"
        log.info("crypto.cross_signing", outcome=outcome, master_key=public_key(keys.master))
        return outcome

    def _check_restored(self, keys: CrossSigningKeys, server: dict[str, Any]) -> None:
        """Restored keys are used only when they are exactly the homeserver's three public keys."""
        wrong = []
        for usage in USAGES:
            entry = server.get(f"{usage}_keys", {}).get(self._user_id)
            held = entry.get("keys", {}) if isinstance(entry, dict) else {}
            if f"ed25519:{public_key(keys.by_usage(usage))}" not in held:
                wrong.append(usage)
        if wrong:
            raise CrossSigningError(
                f"the restored cross-signing keys do not match the homeserver's ({', '.join(wrong)}"
                "); not using them"
            )

    def _verified_device(self, device: Any, *, already_signed: bool) -> dict[str, Any]:
        """The homeserver's entry for our device, without `signatures` and `unsigned` (exactly what
        gets signed), when it is our own device: the user and device id, and as `keys` exactly our
        Olm identity keys, signed by our device's ed25519 key. CrossSigningError otherwise."""
        expected = {
            f"ed25519:{self._device_id}": self._identity_keys["ed25519"],
            f"curve25519:{self._device_id}": self._identity_keys["curve25519"],
        }
        mismatched: list[str] = []
        claimed: dict[str, Any] = {}
        if not isinstance(device, dict):
            mismatched.append("device keys object")
        else:
            if device.get("user_id") != self._user_id:
                mismatched.append("user_id")
            if device.get("device_id") != self._device_id:
                mismatched.append("device_id")
            claimed = device.get("keys") if isinstance(device.get("keys"), dict) else {}
            mismatched.extend(
                key_id for key_id, key in expected.items() if claimed.get(key_id) != key
            )
            if set(claimed) - set(expected):
                mismatched.append("extra keys")
            # Our own Olm key signed this very object: nothing else in it was changed either.
            if not mismatched and not verify_json(
                device,
                self._user_id,
                expected[f"ed25519:{self._device_id}"],
                f"ed25519:{self._device_id}",
            ):
                mismatched.append("device signature")
        if mismatched:
            log.error(
                "crypto.device_keys_mismatch",
                user_id=self._user_id,
                device_id=self._device_id,
                mismatched=mismatched,
                already_signed=already_signed,
                # Public keys only: what the homeserver claims, and ours.
                claimed_ed25519=_public(claimed.get(f"ed25519:{self._device_id}")),
                claimed_curve25519=_public(claimed.get(f"curve25519:{self._device_id}")),
                own_ed25519=self._identity_keys["ed25519"],
                own_curve25519=self._identity_keys["curve25519"],
            )
            signed = " carry a signature by our self-signing key but" if already_signed else ""
            raise CrossSigningError(
                f"the homeserver's keys for device {self._device_id}{signed} do not match the "
                f"device's own identity keys (mismatched: {', '.join(mismatched)}); not "
                f"{'trusting' if already_signed else 'cross-signing'} them. The homeserver may be "
                "compromised, or this device's keys were replaced"
            )
        return {k: v for k, v in device.items() if k not in ("signatures", "unsigned")}

    async def _upload_keys(
        self, http: aiohttp.ClientSession, keys: CrossSigningKeys, password: str | None
    ) -> None:
        path = "/_matrix/client/v3/keys/device_signing/upload"
        body = keys.upload_body(self._user_id)
        status, answer = await self._request(http, "POST", path, body)
        if status == 401 and "flows" in answer:
            stages = [
                flow.get("stages") for flow in answer.get("flows", []) if isinstance(flow, dict)
            ]
            if ["m.login.password"] not in stages:
                raise CrossSigningError(
                    f"the homeserver asks for {stages} to upload cross-signing keys; the bot can only "
                    "answer a password prompt (approve the reset in your account settings, then restart)"
                )
            if not password:
                raise CrossSigningError(
                    "the homeserver wants a password to upload cross-signing keys, and the bot logs in "
                    "with an access token; set matrix.password to enable cross-signing"
                )
            body["auth"] = {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": self._user_id},
                "password": password,
                "session": answer.get("session"),
            }
            status, answer = await self._request(http, "POST", path, body)
        if status != 200:
            raise CrossSigningError(
                f"uploading cross-signing keys failed ({status}: {answer.get('errcode')})"
            )

    async def _sign_device(
        self, http: aiohttp.ClientSession, keys: CrossSigningKeys, device: dict[str, Any]
    ) -> None:
        """Sign `device`, the object _verified_device returned, as it is."""
        signed = sign_json(device, keys.self_signing, self._user_id)
        body = {self._user_id: {self._device_id: signed}}
        status, answer = await self._request(
            http, "POST", "/_matrix/client/v3/keys/signatures/upload", body
        )
        failures = answer.get("failures") if isinstance(answer, dict) else None
        if status != 200 or failures:
            raise CrossSigningError(f"signing the device failed ({status}: {failures or answer})")


def _public(key: Any) -> str | None:
    """A public key claimed by the homeserver, for the log (bounded: it is the server's text)."""
    return key[:64] if isinstance(key, str) else None
