"""A message the bot could not decrypt: ask for the key, give it a moment, and if it does not come,
tell the sender (in words they can read: unencrypted) what to do. Never leave the room.

Help goes only where the message was surely meant for the bot (a DM), and at most once per sender
in HELP_EVERY_S: in rooms it would be noise, and for someone whose app keeps failing a DM storm."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from nio import AsyncClient, MegolmEvent, RoomEncryptedMedia, RoomMessageText
from nio.exceptions import EncryptionError, LocalProtocolError

from bot.lru import LRUDict
from bot.matrix.client import CONNECT_ERRORS
from bot.matrix.render import message_content
from bot.matrix.sender import Sender

log = structlog.get_logger(__name__)

KEY_WAIT_S = 10.0  # how long a missing room key may take to arrive before the sender is told
HELP_EVERY_S = 600.0
MEMO_SIZE = 10_000  # senders whose last help is remembered

# Handles the message once it could be decrypted after all.
Decrypted = Callable[[str, RoomMessageText | RoomEncryptedMedia], Awaitable[None]]


class KeyRecovery:
    def __init__(
        self, client: AsyncClient, sender: Sender, *, prefix: str, key_wait_s: float = KEY_WAIT_S
    ) -> None:
        self._client = client
        self._sender = sender
        self._prefix = prefix
        self.key_wait_s = key_wait_s
        self._helped: LRUDict[str, float] = LRUDict(MEMO_SIZE)  # sender -> when last helped

    async def recover(
        self, room_id: str, event: MegolmEvent, *, is_direct: bool, decrypted: Decrypted
    ) -> None:
        bound = log.bind(room_id=room_id, event_id=event.event_id)
        bound.warning("crypto.undecryptable", sender=event.sender, device_id=event.device_id,
                      session_id=event.session_id)  # fmt: skip
        try:
            await self._client.request_room_key(event)
        except LocalProtocolError:
            pass  # already asked for this session
        except CONNECT_ERRORS as problem:
            bound.warning("crypto.key_request_failed", error=str(problem))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.key_wait_s
        while loop.time() < deadline:
            await asyncio.sleep(0.5)
            try:
                message = self._client.decrypt_event(event)
            except (EncryptionError, ValueError):
                continue
            if isinstance(message, RoomMessageText | RoomEncryptedMedia):  # text, or a file
                bound.info("crypto.decrypted_late")
                await decrypted(room_id, message)
            return
        now = loop.time()
        if not is_direct or now - self._helped.get(event.sender, -HELP_EVERY_S) < HELP_EVERY_S:
            bound.info("crypto.help_skipped", direct=is_direct)
            return
        self._helped[event.sender] = now
        await self._help(room_id, event.event_id, bound)

    async def _help(self, room_id: str, event_id: str, bound: structlog.BoundLogger) -> None:
        p = self._prefix
        text = (
            "⚠️ I could not decrypt your message: your app did not share its encryption keys with "
            f"my session ({self._client.device_id}). Please send it again. If this keeps happening, "
            "make sure your app sends to unverified sessions, or verify my session; "
            f"`{p}help` works in any case."
        )
        try:
            await self._sender.send_plaintext(room_id, message_content(text, reply_to=event_id))
        except Exception as problem:  # a help message that fails must not take anything down
            bound.error("crypto.help_not_sent", error=str(problem))
