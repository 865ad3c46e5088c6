"""Noticing newcomers and greeting them: joins in a room within the batch window become one message
(so a burst of 200 joins is a handful of messages, not 200; more when their names make one message
too large), unlinked newcomers get their login link by DM through the outbox, and the greeting
mentions everyone properly."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import structlog

from bot.commands.identity import login_link_message
from bot.commands.services import LoginSettings
from bot.community.login_links import LoginLinks
from bot.community.outbox import LOGIN_LINK, Outbox, PendingMessage
from bot.community.welcome import Greeting, Joiner, WelcomeService, render_greeting
from bot.matrix.message_size import fits
from bot.matrix.render import message_content
from bot.matrix.sender import Sender, SendError
from bot.offload import off_loop

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
            settings = await self._welcome.settings(room_id)
            linked = await self._welcome.linked({j.mxid for j in joiners})
            name = self._room_name(room_id)
            greetings = await off_loop(
                lambda: _fitting_greetings(settings.template, joiners, linked, name, self._prefix),
                len(joiners) * 300,
            )
        except Exception:
            log.exception("welcome.failed", room_id=room_id)
            return
        for greeting, content in greetings:
            await self._greet_some(room_id, greeting, content)

    async def _greet_some(self, room_id: str, greeting: Greeting, content: dict) -> None:  # type: ignore[type-arg]
        """One greeting message; its newcomers get their login links even if it fails."""
        try:
            await self._sender.send(room_id, content)
            self.messages_sent += 1
            # Recorded once greeted, not before.
            await self._welcome.claim(room_id, greeting.mentions)
            log.info("welcome.sent", room_id=room_id, newcomers=len(greeting.mentions))
        except SendError as problem:
            log.error("welcome.failed", room_id=room_id, error=str(problem))
        except Exception:
            log.exception("welcome.failed", room_id=room_id)
        if not greeting.unlinked:
            return
        try:
            await self._welcome.note_newcomers(room_id, greeting.unlinked)
            if self._dm_unlinked and self._login.providers:
                for mxid in greeting.unlinked:
                    await self.send_login_link(mxid)
        except Exception:
            log.exception("welcome.links_failed", room_id=room_id)

    async def send_login_link(self, mxid: str, *, reminder: bool = False) -> None:
        """Through the outbox: delivered by DM, also if the bot restarts first. The link itself
        is made when the message goes out (compose_login_link), so none is stored unhashed."""
        intro = (
            "A reminder: your Matrix account is not linked to your community account yet."
            if reminder
            else "Welcome! To take part, link your Matrix account to your community account."
        )
        await self._outbox.put(intro, recipient=mxid, kind=LOGIN_LINK)

    async def compose_login_link(self, message: PendingMessage) -> str:
        token = await self._links.issue(message.recipient or "")
        return f"{message.body}\n\n{login_link_message(self._login, token)}"


def _fitting_greetings(
    template: str, joiners: list[Joiner], linked: set[str], room_name: str, prefix: str
) -> list[tuple[Greeting, dict]]:  # type: ignore[type-arg]
    """Greetings for `joiners`, as few as will each fit one event: a batch too large for one
    (long names, many of them) is halved until every part fits."""
    greeting = render_greeting(template, joiners, linked, room_name, prefix)
    content = message_content(greeting.markdown, msgtype="m.text", mentions=greeting.mentions)
    if fits(content) or len(joiners) == 1:
        return [(greeting, content)]
    half = len(joiners) // 2
    return [
        *_fitting_greetings(template, joiners[:half], linked, room_name, prefix),
        *_fitting_greetings(template, joiners[half:], linked, room_name, prefix),
    ]
