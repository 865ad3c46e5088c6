"""Media as a member's client handles it, through the real homeserver: upload a file (encrypted
as Element does in an encrypted room) and send it as m.image / m.audio; download and decrypt what
the bot sent."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
from nio import UploadResponse
from nio.crypto.attachments import decrypt_attachment

from tests.harness.matrix_user import TestUser


async def upload(user: TestUser, data: bytes, mimetype: str, *, encrypt: bool) -> dict[str, Any]:
    """The content keys pointing at the uploaded file: `url`, or `file` when encrypted."""
    response, keys = await user.client.upload(
        lambda *_: io.BytesIO(data), content_type=mimetype, filename="upload",
        encrypt=encrypt, filesize=len(data),
    )  # fmt: skip
    assert isinstance(response, UploadResponse), response
    if encrypt:
        assert keys is not None
        return {"file": {**keys, "url": response.content_uri}}
    return {"url": response.content_uri}


async def send_image(
    user: TestUser,
    room_id: str,
    data: bytes,
    *,
    encrypt: bool = False,
    width: int | None = None,
    height: int | None = None,
    declared_size: int | None = None,
    caption: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    info: dict[str, Any] = {"mimetype": "image/png", "size": declared_size or len(data)}
    if width and height:
        info |= {"w": width, "h": height}
    content: dict[str, Any] = {
        "info": info,
        **await upload(user, data, "image/png", encrypt=encrypt),
        **(extra or {}),
    }
    if caption is not None:
        content["filename"] = "picture.png"
    return await user.send_text(
        room_id, caption or "picture.png", msgtype="m.image", extra_content=content
    )


async def send_voice(
    user: TestUser,
    room_id: str,
    data: bytes,
    *,
    seconds: float,
    encrypt: bool = False,
    mimetype: str = "audio/wav",
    voice: bool = True,
    extra: dict[str, Any] | None = None,
) -> str:
    content: dict[str, Any] = {
        "info": {"mimetype": mimetype, "size": len(data), "duration": round(seconds * 1000)},
        **await upload(user, data, mimetype, encrypt=encrypt),
        **(extra or {}),
    }
    if voice:
        content["org.matrix.msc3245.voice"] = {}
        content["org.matrix.msc1767.audio"] = {"duration": round(seconds * 1000)}
    return await user.send_text(room_id, "Voice message", msgtype="m.audio", extra_content=content)


async def download(user: TestUser, content: dict[str, Any]) -> bytes:
    """The file an m.image / m.audio points at, decrypted when it was sent encrypted."""
    encrypted = content.get("file")
    url = encrypted["url"] if encrypted else content["url"]
    server, media_id = url.removeprefix("mxc://").split("/", 1)
    homeserver = user.client.homeserver.rstrip("/")
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{homeserver}/_matrix/client/v1/media/download/{server}/{media_id}",
            headers={"Authorization": f"Bearer {user.client.access_token}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        data = await response.read()
    if encrypted:
        return decrypt_attachment(
            data, encrypted["key"]["k"], encrypted["hashes"]["sha256"], encrypted["iv"]
        )
    return data
