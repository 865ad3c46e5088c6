"""Files through the homeserver's media repository: members' images and voice messages read (with
a size cap and a deadline, decrypted when they were sent encrypted) and the bot's own pictures
and voice answers uploaded (encrypted in encrypted rooms) and sent as m.image / m.audio.

A hostile member can declare a small file and serve a huge one, or a slow one: the download stops
at `max_bytes` whatever the headers say, and at the deadline."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from nio import AsyncClient, UploadResponse
from nio.crypto.attachments import decrypt_attachment
from nio.exceptions import EncryptionError

from bot.community.assistant_media import GeneratedImage, MediaUnavailable
from bot.community.markdown import shorten
from bot.matrix.sender import Sender, SendError
from bot.store.chat_media import MediaRef

log = structlog.get_logger(__name__)

CHUNK = 64 * 1024
# mxc://server/media-id, both parts in the grammar of the spec: nothing to escape, no path tricks.
_MXC = re.compile(r"mxc://([A-Za-z0-9.:\[\]-]{1,255})/([A-Za-z0-9_-]{1,255})")


def parse_mxc(uri: object) -> tuple[str, str] | None:
    if not isinstance(uri, str):
        return None
    match = _MXC.fullmatch(uri)
    return (match.group(1), match.group(2)) if match else None


def media_ref(content: dict[str, Any]) -> MediaRef | None:
    """The reference to a member's file in an m.image / m.audio content, or None when it has
    no usable one. An encrypted attachment's `file` keeps what decrypts it (not its url)."""
    info = content.get("info") if isinstance(content.get("info"), dict) else {}
    encrypted = content.get("file")
    encryption = None
    if isinstance(encrypted, dict):
        url = encrypted.get("url")
        key, hashes = encrypted.get("key"), encrypted.get("hashes")
        if not (
            isinstance(key, dict) and isinstance(key.get("k"), str)
            and isinstance(encrypted.get("iv"), str)
            and isinstance(hashes, dict) and isinstance(hashes.get("sha256"), str)
        ):  # fmt: skip
            return None
        encryption = {
            "key": {"k": key["k"], "alg": key.get("alg"), "kty": key.get("kty")},
            "iv": encrypted["iv"],
            "hashes": {"sha256": hashes["sha256"]},
            "v": encrypted.get("v"),
        }
    else:
        url = content.get("url")
    if parse_mxc(url) is None:
        return None

    def number(name: str) -> int | None:
        value = info.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    mimetype = info.get("mimetype")
    return MediaRef(
        url, mimetype[:127] if isinstance(mimetype, str) else None, encryption,
        number("w"), number("h"), number("size"),
    )  # fmt: skip


def relation(reply_to: str | None, thread_root: str | None) -> dict[str, Any]:
    if thread_root is not None:
        return {"m.relates_to": {
            "rel_type": "m.thread", "event_id": thread_root, "is_falling_back": reply_to is None,
            "m.in_reply_to": {"event_id": reply_to or thread_root},
        }}  # fmt: skip
    if reply_to is not None:
        return {"m.relates_to": {"m.in_reply_to": {"event_id": reply_to}}}
    return {}


class MatrixMedia:
    """MediaSource for the domain, and the bot's uploads."""

    def __init__(self, client: AsyncClient, sender: Sender, *, timeout_s: float) -> None:
        self._client = client
        self._sender = sender
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def fetch(self, ref: MediaRef, *, max_bytes: int) -> bytes:
        parts = parse_mxc(ref.mxc)
        if parts is None:
            raise MediaUnavailable("it has no valid address")
        try:
            data = await asyncio.wait_for(self._download(*parts, max_bytes), self._timeout_s)
        except TimeoutError:
            raise MediaUnavailable("the download took too long") from None
        except aiohttp.ClientError as problem:
            raise MediaUnavailable(f"the homeserver could not be reached ({problem})") from None
        if ref.encryption is None:
            return data
        e = ref.encryption
        try:
            return await asyncio.to_thread(
                decrypt_attachment, data, e["key"]["k"], e["hashes"]["sha256"], e["iv"]
            )
        except (EncryptionError, KeyError, TypeError, ValueError):
            raise MediaUnavailable("it could not be decrypted") from None

    async def _download(self, server: str, media_id: str, max_bytes: int) -> bytes:
        homeserver = self._client.homeserver.rstrip("/")
        url = (
            f"{homeserver}/_matrix/client/v1/media/download/"
            f"{quote(server, safe='')}/{quote(media_id, safe='')}"
        )
        headers = {"Authorization": f"Bearer {self._client.access_token}"}
        async with self._http().get(url, headers=headers, allow_redirects=True) as response:
            if response.status != 200:
                raise MediaUnavailable(f"the homeserver answered {response.status}")
            if response.content_length is not None and response.content_length > max_bytes:
                raise MediaUnavailable(_too_large(max_bytes))
            buffer = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK):
                buffer += chunk
                if len(buffer) > max_bytes:
                    raise MediaUnavailable(_too_large(max_bytes))
            return bytes(buffer)

    # -- the bot's own files ------------------------------------------------------------------

    async def _upload(
        self, room_id: str, data: bytes, mimetype: str, filename: str
    ) -> dict[str, Any]:
        """Upload; returns the content keys that point at the file: `url`, or in an encrypted
        room `file` (the attachment encrypted, with what decrypts it)."""
        room = self._client.rooms.get(room_id)
        encrypt = bool(room is not None and room.encrypted and self._client.olm is not None)
        response, decryption = await self._client.upload(
            lambda *_: io.BytesIO(data), content_type=mimetype, filename=filename,
            encrypt=encrypt, filesize=len(data),
        )  # fmt: skip
        if not isinstance(response, UploadResponse):
            raise SendError(f"upload failed: {getattr(response, 'message', response)}")
        if encrypt and decryption is not None:
            return {"file": {**decryption, "url": response.content_uri, "mimetype": mimetype}}
        return {"url": response.content_uri}

    async def send_image(
        self,
        room_id: str,
        data: bytes,
        *,
        body: str,
        width: int | None,
        height: int | None,
        reply_to: str | None = None,
        thread_root: str | None = None,
        txn_id: str | None = None,
    ) -> str:
        info: dict[str, Any] = {"mimetype": "image/png", "size": len(data)}
        if width and height:
            info |= {"w": width, "h": height}
        content = {
            "msgtype": "m.image", "body": body, "info": info, "m.mentions": {},
            **await self._upload(room_id, data, "image/png", "image.png"),
            **relation(reply_to, thread_root),
        }  # fmt: skip
        return await self._sender.send(room_id, content, txn_id=txn_id)

    async def send_generated(
        self,
        room_id: str,
        picture: GeneratedImage,
        *,
        reply_to: str | None,
        thread_root: str | None,
        txn_id: str | None = None,
    ) -> str:
        """A picture the assistant made (`!image`), as an m.image answering the command (sent
        once: a command run again after a crash or a takeover reuses its `txn_id`)."""
        return await self.send_image(
            room_id, picture.data, body=shorten(picture.prompt, 200) or "image.png",
            width=picture.width, height=picture.height, reply_to=reply_to,
            thread_root=thread_root, txn_id=txn_id,
        )  # fmt: skip

    async def send_voice(
        self,
        room_id: str,
        data: bytes,
        *,
        mimetype: str,
        seconds: float,
        extension: str,
        reply_to: str | None = None,
        thread_root: str | None = None,
    ) -> str:
        duration = round(seconds * 1000)
        content = {
            "msgtype": "m.audio", "body": "Voice message",
            "info": {"mimetype": mimetype, "size": len(data), "duration": duration},
            "org.matrix.msc1767.audio": {"duration": duration, "waveform": []},
            "org.matrix.msc3245.voice": {}, "m.mentions": {},
            **await self._upload(room_id, data, mimetype, f"voice.{extension}"),
            **relation(reply_to, thread_root),
        }  # fmt: skip
        return await self._sender.send(room_id, content)


def _too_large(max_bytes: int) -> str:
    return f"it is larger than {max_bytes / (1024 * 1024):g} MiB"
