"""Provider tokens kept in the database encrypted (Fernet: AES-128-CBC with an HMAC-SHA256), with a
key derived from a configured secret or one made once and kept in the data dir. A database copy
alone gives no one a member's refresh token."""

from __future__ import annotations

import base64
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

KEY_FILE = "sso-token-key"


class SealedTokens:
    """`cryptography` is loaded at the first token sealed or opened, not when the bot starts."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    @cached_property
    def _fernet(self) -> Fernet:
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"community-bot sso tokens"
        ).derive(self._secret.encode())
        return Fernet(base64.urlsafe_b64encode(key))

    def seal(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def open(self, sealed: str) -> str | None:
        """The token, or None when it was sealed with another key (the key changed)."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except (InvalidToken, ValueError):
            return None

    @classmethod
    def from_config(cls, configured: str | None, data_dir: Path) -> SealedTokens:
        """The configured secret, or the one kept in the data dir (made on first use)."""
        if configured:
            return cls(configured)
        path = data_dir / KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it meanwhile
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
        return cls(path.read_text().strip())
