"""The domain services command handlers may call; bot/app.py fills it in."""

from __future__ import annotations

from dataclasses import dataclass

from bot.community.announcements import Announcements
from bot.community.audit import AuditLog
from bot.community.chat import ChatService
from bot.community.identity import IdentityService
from bot.community.login_links import LoginLinks
from bot.community.members import MemberAdmin
from bot.community.moderation import Moderation
from bot.community.users import UserService
from bot.community.welcome import WelcomeService


@dataclass(frozen=True)
class LoginSettings:
    """What `!login` needs to know about the web side."""

    public_url: str
    link_ttl_minutes: int
    providers: dict[str, str]  # id -> display name

    def provider_name(self, provider_id: str) -> str:
        return self.providers.get(provider_id, provider_id)

    def url_for(self, token: str) -> str:
        return f"{self.public_url}/login/{token}"


@dataclass(frozen=True)
class Services:
    users: UserService
    audit: AuditLog
    identity: IdentityService
    login_links: LoginLinks
    login: LoginSettings
    chat: ChatService
    members: MemberAdmin
    moderation: Moderation
    welcome: WelcomeService
    announcements: Announcements
    bot_user_id: str
