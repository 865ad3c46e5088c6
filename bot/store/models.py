"""Tables of the bot's store. Every change here needs an alembic revision in migrations/versions."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.store.types import CleanJSON, CleanString, CleanText, UTCDateTime

__all__ = ["UTCDateTime"]  # migrations import it from here


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    # Text columns are cleaned on the way in (see types.py): member input never fails a write.
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: CleanJSON, str: CleanText}


class User(Base):
    """A community member known to the bot, by Matrix ID."""

    __tablename__ = "users"

    mxid: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    role: Mapped[str] = mapped_column(CleanString(16), default="user")
    # Who decides the role: "sso" (the provider's groups, at each login and resync) or "manual"
    # (set with !role: an override that SSO never undoes; `!role @member sso` hands it back).
    role_source: Mapped[str] = mapped_column(CleanString(16), default="sso")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)
    # Overrides [gpt] daily_token_quota for this member (`!quota`); None follows the config.
    gpt_daily_quota: Mapped[int | None] = mapped_column(Integer, default=None)


class SyncState(Base):
    """The last sync token the bot finished handling, per bot account."""

    __tablename__ = "sync_state"

    account: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    next_batch: Mapped[str] = mapped_column(CleanText)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LeaderLease(Base):
    """Who is the active bot process (active/standby on PostgreSQL, bot/leader.py). `epoch` grows
    by one at every change of holder: the fencing token the leader's writes are checked against.
    Times are the database's clock, so hosts' clocks never need to agree."""

    __tablename__ = "leader_lease"

    name: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    holder: Mapped[str] = mapped_column(CleanString(255))
    epoch: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()


class HandledEvent(Base):
    """Events the bot has claimed, so that nothing is answered twice."""

    __tablename__ = "handled_events"

    event_id: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    room_id: Mapped[str] = mapped_column(CleanString(255))
    handled_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Set when the handler is done; a claim without it after a restart is work to take up again.
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # The answer under way (a streamed placeholder): after a restart it is edited, not left half.
    reply_event_id: Mapped[str | None] = mapped_column(CleanString(255), default=None)


class QuarantinedEvent(Base):
    """An event whose handling kept failing: recorded once, then skipped, so it cannot stop the
    sync loop (a poison message)."""

    __tablename__ = "quarantined_events"

    event_id: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    room_id: Mapped[str] = mapped_column(CleanString(255))
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(CleanText)
    quarantined_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AuditEntry(Base):
    """Who did what to whom, where and why."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(CleanString(255))
    action: Mapped[str] = mapped_column(CleanString(64))
    target: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    room_id: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    reason: Mapped[str | None] = mapped_column(CleanText, default=None)
    detail: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class OutboxMessage(Base):
    """A message waiting for the bot to deliver it, to a room or as a DM to a user."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "delivered_at", "expired_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    recipient: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    room_id: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    body: Mapped[str] = mapped_column(CleanText)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(CleanText, default=None)
    # "text": body is the message. "login_link": body is an introduction; a fresh link is made
    # when the message goes out, so no usable token ever rests in this table.
    kind: Mapped[str] = mapped_column(CleanString(32), default="text")
    # Not tried again before this (a failure's back-off, or a DM the recipient has not joined).
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    # Given up: too old or too many failures (logged and audited).
    expired_at: Mapped[datetime | None] = mapped_column(default=None)


class DirectRoom(Base):
    """The room the bot uses for direct messages with a user."""

    __tablename__ = "direct_rooms"

    mxid: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    room_id: Mapped[str] = mapped_column(CleanString(255))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Identity(Base):
    """An SSO identity bound to a Matrix ID. Keyed on (issuer, subject), never on email or name."""

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("issuer", "subject", name="uq_identities_issuer_subject"),
        UniqueConstraint("mxid", "provider", name="uq_identities_mxid_provider"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    provider: Mapped[str] = mapped_column(CleanString(64))
    issuer: Mapped[str] = mapped_column(CleanString(512))
    subject: Mapped[str] = mapped_column(CleanString(255))
    mxid: Mapped[str] = mapped_column(CleanString(255), index=True)
    email: Mapped[str | None] = mapped_column(CleanString(320), default=None)
    username: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    display_name: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    groups: Mapped[list[str]] = mapped_column(CleanJSON, default=list)
    linked_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The provider's refresh token (or GitHub's access token), encrypted: groups read again later.
    refresh_token: Mapped[str | None] = mapped_column(CleanText, default=None)
    # The provider's session id (`sid`), for back-channel logout by session.
    session_id: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    synced_at: Mapped[datetime | None] = mapped_column(default=None)  # groups last read
    # Set when the provider refused the refresh token (account disabled or deleted): the member
    # must log in again; cleared by the next login.
    stale_at: Mapped[datetime | None] = mapped_column(default=None)


class LogoutTokenSeen(Base):
    """Back-channel logout tokens already acted on (by `jti`): a replay does nothing."""

    __tablename__ = "logout_tokens_seen"

    jti: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    issuer: Mapped[str] = mapped_column(CleanString(512), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class InviteToken(Base):
    """A registration token made with `!invite-token`: who made it, for how many, until when."""

    __tablename__ = "invite_tokens"

    token: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    created_by: Mapped[str] = mapped_column(CleanString(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    uses_allowed: Mapped[int | None] = mapped_column(Integer, default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_by: Mapped[str | None] = mapped_column(CleanString(255), default=None)


class LoginLink(Base):
    """A one-time login link. Only the SHA-256 of its token is stored."""

    __tablename__ = "login_links"

    token_hash: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    mxid: Mapped[str] = mapped_column(CleanString(255), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # The browser that started the flow (hash of its binding cookie); no other may continue it.
    browser_hash: Mapped[str | None] = mapped_column(CleanString(64), default=None)
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class Conversation(Base):
    """A GPT conversation: the open one of a DM, or one room thread (rooted at `thread_root`)."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_scope", "room_id", "thread_root", "closed_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    room_id: Mapped[str] = mapped_column(CleanString(255))
    thread_root: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    # A DM's conversation belongs to the member: whoever occupies the room later starts afresh.
    member: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)  # `!reset`
    summary: Mapped[str | None] = mapped_column(CleanText, default=None)
    summary_upto: Mapped[int | None] = mapped_column(
        BigInteger, default=None
    )  # last message folded in


class ChatMessage(Base):
    """One side of a turn. A turn's two messages are stored together, only when it succeeded."""

    __tablename__ = "chat_messages"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        index=True,
    )
    role: Mapped[str] = mapped_column(CleanString(16))  # "user" or "assistant"
    author: Mapped[str | None] = mapped_column(CleanString(255), default=None, index=True)
    author_name: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    content: Mapped[str] = mapped_column(CleanText)
    event_id: Mapped[str | None] = mapped_column(CleanString(255), default=None, index=True)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChatMedia(Base):
    """An image a member sent the assistant, by reference (MXC URI, and for an encrypted
    attachment its key, iv and hash): the bytes stay in the media repository and are fetched
    again when a prompt is built. Pending (no message yet) until the next turn takes it."""

    __tablename__ = "chat_media"
    __table_args__ = (Index("ix_chat_media_pending", "room_id", "member", "message_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    message_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("chat_messages.id", ondelete="CASCADE"),
        default=None,
        index=True,
    )
    room_id: Mapped[str] = mapped_column(CleanString(255))
    thread_root: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    member: Mapped[str] = mapped_column(CleanString(255))
    event_id: Mapped[str | None] = mapped_column(CleanString(255), default=None, index=True)
    kind: Mapped[str] = mapped_column(CleanString(16))  # "image"
    mxc: Mapped[str] = mapped_column(CleanString(512))
    mimetype: Mapped[str | None] = mapped_column(CleanString(127), default=None)
    # The `file` object of an encrypted attachment without its url (key, iv, hashes, v).
    encryption: Mapped[dict[str, Any] | None] = mapped_column(CleanJSON, default=None)
    width: Mapped[int | None] = mapped_column(Integer, default=None)
    height: Mapped[int | None] = mapped_column(Integer, default=None)
    size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GptUsage(Base):
    """Tokens a member used on one UTC day."""

    __tablename__ = "gpt_usage"

    mxid: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    # Held by requests under way (their worst case), settled when they end.
    reserved_tokens: Mapped[int] = mapped_column(Integer, default=0)


class RoomSettings(Base):
    """Per-room overrides of global settings (None: follow the config)."""

    __tablename__ = "room_settings"

    room_id: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    gpt_enabled: Mapped[bool | None] = mapped_column(Boolean, default=None)
    gpt_model: Mapped[str | None] = mapped_column(CleanString(255), default=None)
    gpt_prompt: Mapped[str | None] = mapped_column(CleanText, default=None)
    gpt_vision: Mapped[bool | None] = mapped_column(Boolean, default=None)  # images in
    gpt_speak: Mapped[bool | None] = mapped_column(Boolean, default=None)  # voice answers
    # Room messages a question sees as context (0: none, answers open threads).
    gpt_context_messages: Mapped[int | None] = mapped_column(Integer, default=None)
    gpt_show_reasoning: Mapped[bool | None] = mapped_column(Boolean, default=None)
    welcome_enabled: Mapped[bool | None] = mapped_column(Boolean, default=None)
    welcome_template: Mapped[str | None] = mapped_column(CleanText, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(CleanString(255), default=None)


class Welcomed(Base):
    """Who was welcomed in which room: each (room, member) once."""

    __tablename__ = "welcomed"

    room_id: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    mxid: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    welcomed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Newcomer(Base):
    """A member who joined a welcome room unlinked: sent a login hint, reminded once later."""

    __tablename__ = "newcomers"

    mxid: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    room_id: Mapped[str] = mapped_column(CleanString(255))
    joined_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    reminded_at: Mapped[datetime | None] = mapped_column(default=None)


class Announcement(Base):
    """A message to post in a room (or every moderated room), once or on a recurring schedule."""

    __tablename__ = "announcements"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    target: Mapped[str] = mapped_column(CleanString(255))  # a room id, or "all"
    body: Mapped[str] = mapped_column(CleanText)
    # Normalised and absolute (Schedule.text), e.g. "every monday 09:00" or "at 2026-12-24 18:00":
    # "in 2h" is stored as the time it meant, so a restart does not move it.
    schedule: Mapped[str] = mapped_column(CleanString(128))
    next_run_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    last_run_at: Mapped[datetime | None] = mapped_column(default=None)
    created_by: Mapped[str] = mapped_column(CleanString(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class PolicyList(Base):
    """A policy room (ban list, as Draupnir and Mjolnir publish) the community follows; `name`
    is how moderators call it (`!ban … --list <name>` publishes there)."""

    __tablename__ = "policy_lists"

    room_id: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    name: Mapped[str] = mapped_column(CleanString(64), unique=True)
    subscribed_by: Mapped[str] = mapped_column(CleanString(255))
    subscribed_at: Mapped[datetime] = mapped_column(default=utcnow)


class PolicyBan(Base):
    """A ban a list's rule caused, so that withdrawing the rule lifts exactly these (and never
    a moderator's own ban, which is not recorded here)."""

    __tablename__ = "policy_bans"
    __table_args__ = (
        UniqueConstraint("room_id", "mxid", name="uq_policy_bans_room_mxid"),
        Index("ix_policy_bans_rule", "list_room_id", "rule_kind", "rule_key"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    room_id: Mapped[str] = mapped_column(CleanString(255))  # the community room
    mxid: Mapped[str] = mapped_column(CleanString(255))
    list_room_id: Mapped[str] = mapped_column(CleanString(255))
    rule_kind: Mapped[str] = mapped_column(CleanString(16))  # user, room or server
    rule_key: Mapped[str] = mapped_column(CleanText)  # the rule's state key
    entity: Mapped[str] = mapped_column(CleanText)
    banned_at: Mapped[datetime] = mapped_column(default=utcnow)


class PolicyAclDenies(Base):
    """The deny entries of a community room's server ACL that the lists wrote there, so a list
    sync takes back exactly those and never a room admin's own denies."""

    __tablename__ = "policy_acl_denies"

    room_id: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    deny: Mapped[list[str]] = mapped_column(CleanJSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RoomUpgrade(Base):
    """A community room replaced by a newer version (tombstone): configured room ids and stored
    settings follow `new_room_id`."""

    __tablename__ = "room_upgrades"

    old_room_id: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    new_room_id: Mapped[str] = mapped_column(CleanString(255), index=True)
    upgraded_at: Mapped[datetime] = mapped_column(default=utcnow)
    carried: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # table -> rows


class RoomProtection(Base):
    """A room's overrides of one protection's `[protections]` settings (`!protect on|off|set`)."""

    __tablename__ = "room_protections"

    room_id: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    protection: Mapped[str] = mapped_column(CleanString(32), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(CleanString(255), default=None)


class RoomLockdown(Base):
    """A room a join wave closed: the join rule to restore, and when."""

    __tablename__ = "room_lockdowns"

    room_id: Mapped[str] = mapped_column(CleanString(255), primary_key=True)
    join_rule: Mapped[dict[str, Any]] = mapped_column()
    closed_at: Mapped[datetime] = mapped_column(default=utcnow)
    reopen_at: Mapped[datetime] = mapped_column()
    reason: Mapped[str | None] = mapped_column(CleanText, default=None)


_TRIGRAM_INDEXES = (
    ("ix_users_mxid_trgm", User.mxid),
    ("ix_identities_username_trgm", Identity.username),
    ("ix_identities_email_trgm", Identity.email),
)


def declare_trigram_indexes() -> None:
    """GIN trigram indexes on lower(column), serving `lower(column) LIKE '%...%'` (member search).
    PostgreSQL only (pg_trgm, revision 0007_member_search): SQLite has no such index. They join
    the models where a PostgreSQL schema is made or compared (bot/store/migrate.py,
    migrations/env.py), not at import: their options load SQLAlchemy's PostgreSQL dialect, which
    a bot on SQLite never needs, at every start."""
    names = {index.name for index in User.__table__.indexes | Identity.__table__.indexes}
    for name, column in _TRIGRAM_INDEXES:
        if name not in names:
            Index(
                name, func.lower(column).label("lowered"),
                postgresql_using="gin", postgresql_ops={"lowered": "gin_trgm_ops"},
                postgresql_with={"fastupdate": "off"},
            ).ddl_if(dialect="postgresql")  # fmt: skip
