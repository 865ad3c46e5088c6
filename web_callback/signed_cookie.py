"""Short-lived values kept in the browser, signed (HMAC-SHA256) so they cannot be forged or altered."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieSigner:
    def __init__(self, secret: bytes, purpose: str) -> None:
        # One key per purpose: a value signed for one cookie is worthless in another.
        self._key = hmac.new(secret, purpose.encode(), hashlib.sha256).digest()

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def dumps(self, value: dict[str, Any], max_age_s: int) -> str:
        payload = _b64(json.dumps({**value, "exp": int(time.time()) + max_age_s}).encode())
        return f"{payload}.{self._mac(payload)}"

    def loads(self, signed: str | None) -> dict[str, Any] | None:
        """The value, or None when missing, forged, damaged or expired."""
        if not signed or signed.count(".") != 1:
            return None
        payload, mac = signed.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            value = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(value, dict) or value.get("exp", 0) < time.time():
            return None
        return value

    def mac(self, *parts: str) -> str:
        """A keyed digest of `parts`, e.g. a CSRF token tied to a browser and a link."""
        return self._mac("\x00".join(parts))
