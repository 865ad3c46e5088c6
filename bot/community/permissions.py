"""Who may do what to whom. Pure rules, so each is tested on its own:
- nobody acts on the bot;
- nobody kicks, bans, demotes or deactivates themselves;
- nobody acts on someone of higher rank;
- nobody grants a role above their own;
- the last admin cannot be demoted, and configured admins ([roles] admins) are not changed in chat."""

from __future__ import annotations

from dataclasses import dataclass

from bot.community.roles import Role


class Refused(Exception):
    """The action is not allowed; `str()` says why, for the person who asked."""


@dataclass(frozen=True)
class Party:
    mxid: str
    role: Role


def check_target(
    actor: Party, target: Party, *, bot_user_id: str, action: str, on_self: bool = False
) -> None:
    if target.mxid == bot_user_id:
        raise Refused(f"I will not {action} myself.")
    if target.mxid == actor.mxid and not on_self:
        raise Refused(f"You cannot {action} yourself.")
    if target.role > actor.role:
        raise Refused(
            f"{target.mxid} is {target.role.label}, which outranks you ({actor.role.label})."
        )


def check_role_change(
    actor: Party,
    target: Party,
    new_role: Role,
    *,
    bot_user_id: str,
    admins_left: int,
    configured_admin: bool,
) -> None:
    """`admins_left`: how many admins there are now, counting the target if they are one."""
    if new_role > actor.role:
        raise Refused(
            f"You cannot grant {new_role.label}: it is above your own role ({actor.role.label})."
        )
    demoting = new_role < target.role
    check_target(actor, target, bot_user_id=bot_user_id, action="change the role of",
                 on_self=not demoting)  # fmt: skip
    if configured_admin and new_role is not Role.ADMIN:
        raise Refused(
            f"{target.mxid} is an admin by the bot's configuration ([roles] admins); change it there."
        )
    if target.role is Role.ADMIN and new_role is not Role.ADMIN and admins_left <= 1:
        raise Refused(f"{target.mxid} is the last admin; make someone else admin first.")
