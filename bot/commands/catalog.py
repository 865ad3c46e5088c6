"""Every command area, in the order help lists them."""

from __future__ import annotations

from bot.commands import (
    access,
    announcements,
    chat,
    general,
    identity,
    lists,
    media,
    members,
    moderation,
    onboarding,
    protections,
    summary,
    welcome,
)
from bot.commands.registry import Registry, merge


def all_commands() -> Registry:
    return merge(
        general.registry,
        identity.registry,
        chat.registry,
        summary.registry,
        media.registry,
        members.registry,
        access.registry,
        moderation.registry,
        protections.registry,
        lists.registry,
        welcome.registry,
        announcements.registry,
        onboarding.registry,
    )
