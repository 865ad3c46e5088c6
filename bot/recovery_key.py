"""The recovery key as Element shows it: the 32-byte secret-storage key behind the two bytes
0x8B 0x01, followed by a parity byte (the XOR of all bytes before it), in Bitcoin's base58,
grouped by four characters ("EsT… …"). Typing errors are caught by the parity byte; a wrong but
well-formed key is caught later, by the key description's check value."""

from __future__ import annotations

from bot.errors import OperatorError

PREFIX = bytes([0x8B, 0x01])
KEY_BYTES = 32
_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {char: value for value, char in enumerate(_ALPHABET)}
_MAX_TEXT = 200  # a recovery key is 59 characters with its spaces; anything much longer is not one


class RecoveryKeyError(OperatorError, ValueError):
    """Not a recovery key. The message never contains the text that was given."""


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, digit = divmod(number, 58)
        out.append(_ALPHABET[digit])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _INDEX.get(char)
        if digit is None:
            raise RecoveryKeyError(
                "the recovery key contains a character that is not in a recovery key "
                "(they use letters and digits, but never 0, O, I or l)"
            )
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


def _parity(data: bytes) -> int:
    parity = 0
    for byte in data:
        parity ^= byte
    return parity


def encode_recovery_key(key: bytes) -> str:
    if len(key) != KEY_BYTES:
        raise ValueError(f"a secret-storage key has {KEY_BYTES} bytes, not {len(key)}")
    raw = PREFIX + key
    text = _b58encode(raw + bytes([_parity(raw)]))
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def decode_recovery_key(text: str) -> bytes:
    """The 32-byte key; RecoveryKeyError (without echoing `text`) when it is not a recovery key."""
    if len(text) > _MAX_TEXT:
        raise RecoveryKeyError("the recovery key is far too long; expected 48 characters")
    compact = "".join(text.split())
    if not compact:
        raise RecoveryKeyError("the recovery key is empty")
    raw = _b58decode(compact)
    if len(raw) != len(PREFIX) + KEY_BYTES + 1 or not raw.startswith(PREFIX):
        raise RecoveryKeyError(
            "this is not a recovery key (expected 48 characters starting with 'Es', as "
            "`community-bot recovery-key` or Element shows it)"
        )
    if _parity(raw) != 0:
        raise RecoveryKeyError(
            "the recovery key has a typing error (its check character does not match)"
        )
    return raw[len(PREFIX) : -1]
