"""What a command handler knows about the message that invoked it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.community.roles import Role

if TYPE_CHECKING:
    from bot.commands.services import Services


@dataclass(frozen=True)
class CommandContext:
    sender: str
    room_id: str
    event_id: str
    role: Role
    is_direct: bool
    thread_root: str | None  # the thread the command was sent in, if any
    in_admin_room: bool
    prefix: str
    origin_server_ts: int  # ms since the epoch, from the homeserver
    received_at: float  # time.time() when the bot received the event
    services: Services  # a view of the services the command declared (ServiceView)

    def latency_ms(self) -> float:
        """From the homeserver stamping the event until now."""
        return max(0.0, time.time() * 1000 - self.origin_server_ts)
