"""The domain services command handlers may call; bot/app.py fills it in. Each handler sees only
those its command declares (`uses`), through a ServiceView."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bot.community.access_service import AccessService
from bot.community.announcements import Announcements
from bot.community.assistant_media import AssistantMedia
from bot.community.audit import AuditLog
from bot.community.chat import ChatService
from bot.community.identity import IdentityService
from bot.community.identity_sync import IdentitySync
from bot.community.invite_tokens import InviteTokens
from bot.community.login_links import LoginLinks
from bot.community.members import MemberAdmin
from bot.community.moderation import Moderation
from bot.community.policy_lists import PolicyLists
from bot.community.protections import ProtectionService
from bot.community.roles import Role
from bot.community.summaries import Summaries
from bot.community.users import UserService
from bot.community.welcome import WelcomeService

if TYPE_CHECKING:
    from bot.commands.registry import Command


class CommandCatalog(Protocol):
    """What `!help` needs to know about the commands (the registry provides it)."""

    def resolve(self, name: str) -> Command | None: ...
    def visible_to(self, role: Role) -> list[Command]: ...
    def areas(self) -> list[str]: ...


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
    commands: CommandCatalog | None = None  # the executor fills in its registry
    invite_tokens: InviteTokens | None = None  # None: no `[synapse] admin_token` configured
    identity_sync: IdentitySync | None = None  # None: in tests that do not need it
    access: AccessService | None = None  # group-gated rooms; None: in tests that do not need it
    summaries: Summaries | None = None  # catch-up summaries; None: in tests that do not need it
    lists: PolicyLists | None = None  # shared ban lists; None: in tests that do not need them
    media: AssistantMedia | None = None  # images and voice; None: in tests that do not need it
    protections: ProtectionService | None = None  # None: in tests that do not need them


class ServiceView:
    """The services one command may use, and no others: a handler reaching for an undeclared
    service fails at once (in its tests), so what each command depends on stays visible."""

    def __init__(self, services: Services, allowed: Iterable[str], command: str) -> None:
        self._services = services
        self._allowed = frozenset(allowed) | {"bot_user_id", "login"}
        self._command = command

    def __getattr__(self, name: str) -> Any:
        if name not in self._allowed:
            raise AttributeError(
                f"!{self._command} does not declare that it uses {name!r} (registry `uses`)"
            )
        return getattr(self._services, name)
