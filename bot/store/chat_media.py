"""Images members send the assistant, kept by reference: an MXC URI and, for an encrypted
attachment, what reads it (key, iv, hash). Never the bytes: the media repository holds those, and
a prompt fetches them again. An image waits (pending) until the member's next turn takes it, then
belongs to that turn's message and leaves with it (a redaction, `!reset` retention, `!forget`);
a redaction of the image itself removes it at once, pending or attached.
Also the rooms' own switches for images in and voice answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from bot.store.audit import add_entry
from bot.store.database import Database
from bot.store.models import ChatMedia, RoomSettings, utcnow


@dataclass(frozen=True)
class MediaRef:
    """Where an image is and how to read it."""

    mxc: str
    mimetype: str | None = None
    encryption: dict[str, Any] | None = None  # key, iv, hashes of an encrypted attachment
    width: int | None = None
    height: int | None = None
    size: int | None = None


@dataclass(frozen=True)
class StoredMedia:
    id: int
    message_id: int | None
    ref: MediaRef


@dataclass(frozen=True)
class RoomMediaOverrides:
    """A room's own switches; None follows the config."""

    vision: bool | None = None
    speak: bool | None = None


def _stored(row: ChatMedia) -> StoredMedia:
    ref = MediaRef(row.mxc, row.mimetype, row.encryption, row.width, row.height, row.size)
    return StoredMedia(row.id, row.message_id, ref)


class ChatMediaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_pending(
        self,
        room_id: str,
        thread_root: str | None,
        member: str,
        ref: MediaRef,
        *,
        event_id: str | None,
        keep_at_most: int,
    ) -> int:
        """Keep an image for the member's next turn here; only the newest `keep_at_most` stay
        pending (a member sending a hundred images holds a hundred rows for a moment, not more)."""
        async with self._db.transaction() as session:
            row = ChatMedia(
                room_id=room_id, thread_root=thread_root, member=member, event_id=event_id,
                kind="image", mxc=ref.mxc, mimetype=ref.mimetype, encryption=ref.encryption,
                width=ref.width, height=ref.height, size=ref.size,
            )  # fmt: skip
            session.add(row)
            await session.flush()
            older = list(
                await session.scalars(
                    select(ChatMedia.id)
                    .where(*_pending_scope(room_id, thread_root, member))
                    .order_by(ChatMedia.id.desc())
                    .offset(keep_at_most)
                )
            )
            if older:
                await session.execute(delete(ChatMedia).where(ChatMedia.id.in_(older)))
            return row.id

    async def pending(
        self, room_id: str, thread_root: str | None, member: str, since: datetime
    ) -> list[StoredMedia]:
        """Images waiting for the member's next turn here, sent after `since`, oldest first."""
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(ChatMedia)
                .where(*_pending_scope(room_id, thread_root, member), ChatMedia.created_at >= since)
                .order_by(ChatMedia.id)
            )
            return [_stored(r) for r in rows]

    async def of_messages(self, message_ids: Sequence[int]) -> list[StoredMedia]:
        """The images stored with these messages, oldest first."""
        if not message_ids:
            return []
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(ChatMedia)
                .where(ChatMedia.message_id.in_(list(message_ids)))
                .order_by(ChatMedia.id)
            )
            return [_stored(r) for r in rows]

    async def attach(self, media_ids: Sequence[int], message_id: int) -> None:
        """The turn that took these images was stored: they belong to its message now."""
        if not media_ids:
            return
        async with self._db.transaction() as session:
            await session.execute(
                update(ChatMedia)
                .where(ChatMedia.id.in_(list(media_ids)), ChatMedia.message_id.is_(None))
                .values(message_id=message_id)
            )

    async def forget_event(self, event_id: str) -> list[str]:
        """The member redacted their image: it is forgotten, key and all, pending or attached
        to a turn already. Returns the MXC URIs forgotten."""
        async with self._db.transaction() as session:
            rows = list(
                (await session.execute(
                    select(ChatMedia.id, ChatMedia.mxc).where(ChatMedia.event_id == event_id)
                )).all()
            )  # fmt: skip
            if rows:
                await session.execute(
                    delete(ChatMedia).where(ChatMedia.id.in_([r[0] for r in rows]))
                )
            return [r[1] for r in rows]

    async def drop_pending_before(self, cutoff: datetime) -> int:
        """Images no turn took in time are forgotten."""
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(ChatMedia).where(
                    ChatMedia.message_id.is_(None), ChatMedia.created_at < cutoff
                )
            )
            return result.rowcount or 0

    # -- room switches ------------------------------------------------------------------------

    async def room_overrides(self, room_id: str) -> RoomMediaOverrides:
        async with self._db.transaction() as session:
            row = await session.get(RoomSettings, room_id)
        if row is None:
            return RoomMediaOverrides()
        return RoomMediaOverrides(row.gpt_vision, row.gpt_speak)

    async def set_room_switch(self, room_id: str, actor: str, name: str, on: bool | None) -> None:
        """`name` is "vision" or "speak"; None hands it back to the config. Audited."""
        column = {"vision": "gpt_vision", "speak": "gpt_speak"}[name]
        async with self._db.transaction() as session:
            row = await session.get(RoomSettings, room_id) or RoomSettings(room_id=room_id)
            session.add(row)
            setattr(row, column, on)
            row.updated_by = actor
            row.updated_at = utcnow()
            add_entry(
                session, actor=actor, action="gpt.room_settings", room_id=room_id,
                detail={name: "default" if on is None else str(on)},
            )  # fmt: skip


def _pending_scope(room_id: str, thread_root: str | None, member: str) -> list[Any]:
    thread = (
        ChatMedia.thread_root.is_(None)
        if thread_root is None
        else ChatMedia.thread_root == thread_root
    )
    return [
        ChatMedia.room_id == room_id,
        ChatMedia.member == member,
        thread,
        ChatMedia.message_id.is_(None),
    ]
