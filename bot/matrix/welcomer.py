"""Noticing newcomers and greeting them: joins in a room within the batch window become one message
(so a burst of 200 joins is a handful of messages, not 200), unlinked newcomers get their login
link by DM through the outbox, and the greeting mentions everyone properly."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import structlog

from bot.commands.identity import login_link_message
from bot.commands.services import LoginSettings
from bot.community.login_links import LoginLinks
from bot.community.outbox import Outbox
from bot.community.welcome import Joiner, WelcomeService, render_greeting
from bot.matrix.render import message_content
from bot.matrix.sender import Sender, SendError

log = structlog.get_logger(__name__)


class Welcomer:
    def __init__(
        self,
        welcome: WelcomeService,
        sender: Sender,
        *,
        room_name,  # type: ignore[no-untyped-def]
        links: LoginLinks,
        outbox: Outbox,
        login: LoginSettings,
        batch_window_s: float,
        dm_unlinked: bool,
        prefix: str,
    ) -> None:
        self._welcome = welcome
        self._sender = sender
        self._room_name = room_name
        self._links = links
        self._outbox = outbox
        self._login = login
        self._window = batch_window_s
        self._dm_unlinked = dm_unlinked
        self._prefix = prefix
        self._pending: defaultdict[str, dict[str, Joiner]] = defaultdict(dict)
        self._timers: dict[str, asyncio.Task[None]] = {}
        self.messages_sent = 0

    async def on_join(self, room_id: str, mxid: str, display_name: str | None) -> None:
        if not (await self._welcome.settings(room_id)).enabled:
            return
        self._pending[room_id][mxid] = Joiner(mxid, display_name)
        if room_id not in self._timers:
            self._timers[room_id] = asyncio.create_task(self._after_window(room_id))

    async def _after_window(self, room_id: str) -> None:
        try:
            await asyncio.sleep(self._window)
        except asyncio.CancelledError:
            self._timers.pop(room_id, None)
            raise
        try:
            await self.greet(room_id)
        finally:
            self._timers.pop(room_id, None)

    async def flush(self) -> None:
        """At shutdown: greet everyone still waiting, and let greetings under way finish."""
        for room_id, task in list(self._timers.items()):
            if room_id in self._pending:  # still in its window: greet now instead
                task.cancel()
        for room_id in list(self._pending):
            await self.greet(room_id)
        if self._timers:
            await asyncio.wait(list(self._timers.values()), timeout=10)

    async def greet(self, room_id: str) -> None:
        joiners = list(self._pending.pop(room_id, {}).values())
        if not joiners:
            return
        try:
            done = await self._welcome.welcomed_already(room_id, [j.mxid for j in joiners])
            joiners = [j for j in joiners if j.mxid not in done]
            if not joiners:
                return
            fresh = {j.mxid for j in joiners}
            settings = await self._welcome.settings(room_id)
            linked = await self._welcome.linked(fresh)
            greeting = render_greeting(
                settings.template, joiners, linked, self._room_name(room_id), self._prefix
            )
            await self._sender.send(
                room_id,
                message_content(greeting.markdown, msgtype="m.text", mentions=greeting.mentions),
            )
            self.messages_sent += 1
            await self._welcome.claim(room_id, fresh)  # recorded once greeted, not before
            log.info("welcome.sent", room_id=room_id, newcomers=len(joiners))
            if greeting.unlinked:
                await self._welcome.note_newcomers(room_id, greeting.unlinked)
                if self._dm_unlinked and self._login.providers:
                    for mxid in greeting.unlinked:
                        await self.send_login_link(mxid)
        except SendError as problem:
            log.error("welcome.failed", room_id=room_id, error=str(problem))
        except Exception:
            log.exception("welcome.failed", room_id=room_id)

    async def send_login_link(self, mxid: str, *, reminder: bool = False) -> None:
        """Through the outbox: delivered by DM, also if the bot restarts first."""
        token = await self._links.issue(mxid)
        intro = (
            "A reminder: your Matrix account is not linked to your community account yet."
            if reminder
            else "Welcome! To take part, link your Matrix account to your community account."
        )
        await self._outbox.put(
            f"{intro}\n\n{login_link_message(self._login, token)}", recipient=mxid
        )
