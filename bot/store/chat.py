"""Where the assistant's conversations live: rooms' settings, open conversations (a DM's belongs to
its member, a room thread's to the thread), their messages and summaries. Storage only: who may
chat, what the model sees and what is counted are decided in bot/community/chat.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.audit import add_entry
from bot.store.database import Database
from bot.store.models import ChatMedia, ChatMessage, Conversation, RoomSettings, User, utcnow


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: str  # "user" or "assistant"
    content: str
    tokens: int  # including the per-message overhead
    author_name: str | None = None


@dataclass(frozen=True)
class RoomOverrides:
    """A room's own assistant settings; None follows the config."""

    enabled: bool | None = None
    model: str | None = None
    prompt: str | None = None
    context_messages: int | None = None
    show_reasoning: bool | None = None


@dataclass(frozen=True)
class OpenConversation:
    id: int
    summary: str | None
    summary_upto: int | None


@dataclass(frozen=True)
class NewMessage:
    role: str
    content: str
    tokens: int
    author: str | None = None
    author_name: str | None = None
    event_id: str | None = None
    media_ids: tuple[int, ...] = ()  # pending images (chat_media) this message takes


def _stored(row: ChatMessage) -> StoredMessage:
    return StoredMessage(row.id, row.role, row.content, row.tokens, row.author_name)


def _open_query(room_id: str, thread_root: str | None, member: str | None = None):  # type: ignore[no-untyped-def]
    """A room thread's conversation, or (no thread) a DM's: that one belongs to the member, so
    whoever is in the room later never inherits it (member None: any, for old rows and tests)."""
    if thread_root is not None:
        scope = [Conversation.thread_root == thread_root]
    else:
        scope = [Conversation.thread_root.is_(None)]
        if member is not None:
            scope.append(Conversation.member == member)
    return (
        select(Conversation)
        .where(Conversation.room_id == room_id, *scope, Conversation.closed_at.is_(None))
        .order_by(Conversation.id.desc())
        .limit(1)
    )


async def delete_turn(session: AsyncSession, message: ChatMessage) -> None:
    """Delete a stored message and, for a member's message, the answer that followed it."""
    if message.role == "user":
        answer = await session.scalar(
            select(ChatMessage)
            .where(
                ChatMessage.conversation_id == message.conversation_id, ChatMessage.id > message.id
            )
            .order_by(ChatMessage.id)
            .limit(1)
        )
        if answer is not None and answer.role == "assistant":
            await session.delete(answer)
    await session.delete(message)


class ChatStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- settings -----------------------------------------------------------------------------

    async def room_overrides(self, room_id: str) -> RoomOverrides:
        async with self._db.transaction() as session:
            row = await session.get(RoomSettings, room_id)
        if row is None:
            return RoomOverrides()
        return RoomOverrides(
            row.gpt_enabled, row.gpt_model, row.gpt_prompt, row.gpt_context_messages,
            row.gpt_show_reasoning,
        )  # fmt: skip

    async def change_room_overrides(
        self, room_id: str, actor: str, changes: dict[str, object], *, reset: bool
    ) -> None:
        """Set `enabled`, `model` or `prompt` for one room, or `reset` them all; audited."""
        columns = {
            "enabled": "gpt_enabled", "model": "gpt_model", "prompt": "gpt_prompt",
            "context_messages": "gpt_context_messages", "show_reasoning": "gpt_show_reasoning",
        }  # fmt: skip
        async with self._db.transaction() as session:
            row = await session.get(RoomSettings, room_id) or RoomSettings(room_id=room_id)
            session.add(row)
            for name, column in columns.items():
                if reset:
                    setattr(row, column, None)
                elif name in changes:
                    setattr(row, column, changes[name])
            row.updated_by = actor
            row.updated_at = utcnow()
            add_entry(
                session, actor=actor, action="gpt.room_settings", room_id=room_id,
                detail={"reset": True} if reset else {k: str(v)[:200] for k, v in changes.items()},
            )  # fmt: skip

    async def set_quota_override(self, mxid: str, tokens: int | None, actor: str) -> None:
        async with self._db.transaction() as session:
            user = await session.get(User, mxid)
            if user is None:
                user = User(mxid=mxid, role="user", active=True)
                session.add(user)
            user.gpt_daily_quota = tokens
            add_entry(session, actor=actor, action="gpt.quota", target=mxid,
                      detail={"daily_tokens": tokens})  # fmt: skip

    # -- conversations ------------------------------------------------------------------------

    async def open_conversation(
        self, room_id: str, thread_root: str | None, member: str, recent: int
    ) -> tuple[OpenConversation | None, list[StoredMessage]]:
        """The open conversation here (None when there is none yet) and its `recent` newest
        messages, newest first."""
        async with self._db.transaction() as session:
            found = await session.scalar(_open_query(room_id, thread_root, member))
            if found is None:
                return None, []
            rows = await session.scalars(
                select(ChatMessage)
                .where(ChatMessage.conversation_id == found.id)
                .order_by(ChatMessage.id.desc())
                .limit(recent)
            )
            messages = [_stored(r) for r in rows]
            return OpenConversation(found.id, found.summary, found.summary_upto), messages

    async def has_open(self, room_id: str, thread_root: str) -> bool:
        async with self._db.transaction() as session:
            return await session.scalar(_open_query(room_id, thread_root)) is not None

    async def close(self, room_id: str, thread_root: str | None, member: str | None) -> bool:
        async with self._db.transaction() as session:
            found = await session.scalar(_open_query(room_id, thread_root, member))
            if found is None:
                return False
            found.closed_at = utcnow()
            return True

    async def add_turn(
        self,
        where: tuple[str, str | None, str, int | None],
        question: NewMessage,
        answer: NewMessage,
    ) -> None:
        """Store a turn in conversation `where` = (room, thread root, member, id), made now when
        its id is None (the first turn of a conversation)."""
        room_id, thread_root, member, conversation_id = where
        async with self._db.transaction() as session:
            if conversation_id is None:
                found = await session.scalar(_open_query(room_id, thread_root, member))
                if found is None:
                    found = Conversation(
                        room_id=room_id, thread_root=thread_root,
                        member=member if thread_root is None else None,
                    )  # fmt: skip
                    session.add(found)
                    await session.flush()
                conversation_id = found.id
            rows = [
                ChatMessage(
                    conversation_id=conversation_id,
                    role=m.role,
                    author=m.author,
                    author_name=m.author_name,
                    content=m.content,
                    event_id=m.event_id,
                    tokens=m.tokens,
                )
                for m in (question, answer)
            ]
            session.add_all(rows)
            if question.media_ids:  # the images the turn took belong to its question now
                await session.flush()
                await session.execute(
                    update(ChatMedia)
                    .where(ChatMedia.id.in_(question.media_ids), ChatMedia.message_id.is_(None))
                    .values(message_id=rows[0].id)
                )
            await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(updated_at=utcnow())
            )

    async def history(
        self, room_id: str, thread_root: str | None, member: str | None
    ) -> list[StoredMessage]:
        async with self._db.transaction() as session:
            conversation = await session.scalar(_open_query(room_id, thread_root, member))
            if conversation is None:
                return []
            rows = await session.scalars(
                select(ChatMessage)
                .where(ChatMessage.conversation_id == conversation.id)
                .order_by(ChatMessage.id)
            )
            return [_stored(r) for r in rows]

    # -- summaries ----------------------------------------------------------------------------

    async def left_the_window(
        self, conversation_id: int, oldest_in_window: int
    ) -> tuple[str | None, list[StoredMessage]]:
        """The stored summary and the messages older than the window not folded into it yet."""
        async with self._db.transaction() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None:
                return None, []
            query = select(ChatMessage).where(
                ChatMessage.conversation_id == conversation_id,
                ChatMessage.id < oldest_in_window,
            )
            if conversation.summary_upto is not None:
                query = query.where(ChatMessage.id > conversation.summary_upto)
            rows = await session.scalars(query.order_by(ChatMessage.id))
            return conversation.summary, [_stored(r) for r in rows]

    async def save_summary(self, conversation_id: int, summary: str, upto: int | None) -> None:
        async with self._db.transaction() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is not None:
                conversation.summary, conversation.summary_upto = summary, upto

    # -- members' messages --------------------------------------------------------------------

    async def forget_event(self, event_id: str) -> bool:
        """A redacted message leaves the history, with the answer it got; a redacted image
        (chat_media, with the key of an encrypted one) is forgotten, pending or attached."""
        async with self._db.transaction() as session:
            images = await session.execute(delete(ChatMedia).where(ChatMedia.event_id == event_id))
            message = await session.scalar(
                select(ChatMessage).where(ChatMessage.event_id == event_id)
            )
            if message is None:
                return bool(images.rowcount)
            await delete_turn(session, message)
            return True

    async def message_by_event(self, event_id: str) -> tuple[str, str | None, str | None] | None:
        """(role, author, author name) of the stored message of this event."""
        async with self._db.transaction() as session:
            row = await session.scalar(select(ChatMessage).where(ChatMessage.event_id == event_id))
            return (row.role, row.author, row.author_name) if row is not None else None

    async def replace_text(self, event_id: str, content: str, tokens: int) -> None:
        async with self._db.transaction() as session:
            await session.execute(
                update(ChatMessage)
                .where(ChatMessage.event_id == event_id)
                .values(content=content, tokens=tokens)
            )

    async def purge_untouched_since(self, cutoff: datetime) -> int:
        """Conversations untouched since `cutoff` go, their messages with them."""
        async with self._db.transaction() as session:
            old = list(
                await session.scalars(
                    select(Conversation.id).where(Conversation.updated_at < cutoff)
                )
            )
            if old:
                await session.execute(
                    delete(ChatMessage).where(ChatMessage.conversation_id.in_(old))
                )
                await session.execute(delete(Conversation).where(Conversation.id.in_(old)))
            return len(old)
