"""The domain services command handlers may call; bot/app.py fills it in."""

from __future__ import annotations

from dataclasses import dataclass

from bot.community.audit import AuditLog
from bot.community.users import UserService


@dataclass(frozen=True)
class Services:
    users: UserService
    audit: AuditLog
    bot_user_id: str
