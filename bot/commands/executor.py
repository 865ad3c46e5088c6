"""Runs one command line: finds the command, checks who may run it where, parses, calls the handler."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace

from bot.commands.context import CommandContext
from bot.commands.registry import Registry, UsageError, parse_arguments
from bot.commands.reply import Reply
from bot.commands.services import Services, ServiceView
from bot.community.markdown import code_span, shorten
from bot.offload import off_loop

_SPACE = re.compile(r"\s")


def _split_name(text: str) -> tuple[str, str] | None:
    """`help ping` -> ("help", "ping"): the first word, and the rest after one whitespace."""
    stripped = text.lstrip()
    if not stripped:
        return None
    space = _SPACE.search(stripped)
    end = space.start() if space else len(stripped)
    return stripped[:end], stripped[end + 1 :]


@dataclass(frozen=True)
class Message:
    """The parts of a Matrix message a command needs."""

    sender: str
    room_id: str
    event_id: str
    is_direct: bool
    origin_server_ts: int
    thread_root: str | None = None
    resumed: bool = False  # taken up again (after a restart, or decrypted late)


class CommandExecutor:
    def __init__(
        self, registry: Registry, services: Services, *, prefix: str, admin_room_id: str | None
    ) -> None:
        self.registry = registry
        self._services = services
        self._prefix = prefix
        self._admin_room_id = admin_room_id

    def knows(self, name: str) -> bool:
        return self.registry.resolve(name) is not None

    async def run(self, text: str, message: Message) -> Reply:
        """`text` is the command line without its prefix, e.g. `help ping`."""
        received_at = time.time()
        split = _split_name(text)
        if split is None:
            return Reply.error(f"Send `{self._prefix}help` to see what I can do.")
        name, argtext = split
        users = self._services.users
        caller = await users.caller(message.sender)
        role = caller.role
        command = self.registry.resolve(name)
        p = self._prefix
        if command is None or command.role > role:
            name = shorten(name, 40)
            suggestion = self.registry.suggest(name, role)
            hint = f" Did you mean `{p}{suggestion}`?" if suggestion else ""
            return Reply.error(
                f"I don't know the command {code_span(p + name)}.{hint} Send `{p}help` for the list."
            )
        if not command.allowed_when_inactive and not caller.active:
            return Reply.error(
                "Your account is deactivated, so you can only use "
                f"`{p}help` and `{p}whoami`. Ask a moderator if you think this is a mistake."
            )
        if (
            command.confined_to_admin_room
            and self._admin_room_id is not None
            and message.room_id != self._admin_room_id
        ):
            return Reply.error(f"`{p}{command.name}` works only in the admin room.")
        try:
            args = await off_loop(lambda: parse_arguments(command, argtext), len(argtext))
        except UsageError as problem:
            return Reply.error(f"{str(problem).rstrip('.')}. Usage: `{command.usage(p)}`")
        ctx = CommandContext(
            sender=message.sender,
            room_id=message.room_id,
            event_id=message.event_id,
            role=role,
            is_direct=message.is_direct,
            thread_root=message.thread_root,
            in_admin_room=message.room_id == self._admin_room_id,
            prefix=p,
            origin_server_ts=message.origin_server_ts,
            received_at=received_at,
            services=ServiceView(  # type: ignore[arg-type]
                replace(self._services, commands=self.registry), command.uses, command.name
            ),
        )
        await users.touch(message.sender)
        return await command.handler(ctx, args)
