"""A scripted Matrix user for integration tests, built on matrix-nio.

``TestUser`` syncs in the background and keeps every timeline event of its joined (and left)
rooms, plus the stripped state of rooms it is invited to, as raw event dicts in arrival order.
Tests wait on that buffer; ``after_event_id`` narrows a wait to events that arrived after a
given event (e.g. the reply to a command we just sent).

Works for encrypted rooms too when nio's encryption is available (vodozemac): the device's keys
live in an in-memory store, events are decrypted before they reach the buffer (the buffer then
holds the decrypted event: ``type`` is ``m.room.message``), and ``is_decrypted(event_id)`` tells
whether an event arrived encrypted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nio
from nio.crypto import ENCRYPTION_ENABLED

from tests.harness.synapse import MatrixAccount

logger = logging.getLogger(__name__)

SYNC_TIMEOUT_MS = 1000
SYNC_FILTER: dict[str, Any] = {
    "room": {"timeline": {"limit": 100}},
    "presence": {"types": []},
}


@dataclass
class _Entry:
    room_id: str
    event: dict[str, Any]
    section: str  # "join", "leave" or "invite"
    decrypted: bool


def _summary(event: dict[str, Any]) -> str:
    content = event.get("content") or {}
    kind = event.get("type", "?")
    detail = ""
    if kind == "m.room.message":
        detail = f"{content.get('msgtype')} {content.get('body', '')!r}"
    elif kind == "m.room.member":
        detail = f"{event.get('state_key')} -> {content.get('membership')}"
    elif kind == "m.room.encrypted":
        detail = "(undecryptable)"
    text = f"{event.get('event_id', '<stripped>')} {kind} from {event.get('sender')} {detail}"
    return text if len(text) < 220 else text[:217] + "..."


def default_client_config(**overrides: Any) -> nio.AsyncClientConfig:
    """The client configuration TestUser uses by default; ``overrides`` replace fields."""
    kwargs: dict[str, Any] = {
        # Reconnect fast when Synapse restarts (nio's default backoff grows to 60 s).
        "max_timeout_retry_wait_time": 0.5,
        "request_timeout": 30,
        "encryption_enabled": ENCRYPTION_ENABLED,
    }
    if ENCRYPTION_ENABLED:
        from nio.store import SqliteMemoryStore

        kwargs["store"] = SqliteMemoryStore
    kwargs.update(overrides)
    return nio.AsyncClientConfig(**kwargs)


class TestUser:
    """A logged-in Matrix user that syncs in the background and records what it sees."""

    __test__ = False  # not a pytest test class

    def __init__(self, client: nio.AsyncClient, account: MatrixAccount) -> None:
        self.client = client
        self.account = account
        self.user_id = account.user_id
        self.sync_errors: list[str] = []
        self._entries: list[_Entry] = []
        self._index_by_event_id: dict[str, int] = {}
        self._undecrypted: dict[int, tuple[_Entry, Any]] = {}
        self._changed = asyncio.Condition()
        self._synced_once = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    async def login(
        cls,
        homeserver: str,
        account: MatrixAccount,
        *,
        first_sync_timeout: float = 15.0,
        client_config: nio.AsyncClientConfig | None = None,
    ) -> TestUser:
        """Use the account's access token (no new login) and start syncing in the background.

        Returns after the first successful sync. nio retries 429s (sleeping ``retry_after_ms``)
        forever by default; to see them instead, pass
        ``client_config=default_client_config(max_limit_exceeded=0)``.
        """
        client = nio.AsyncClient(
            homeserver,
            account.user_id,
            device_id=account.device_id,
            config=client_config or default_client_config(),
        )
        client.restore_login(account.user_id, account.device_id, account.access_token)
        user = cls(client, account)
        try:
            if client.olm and client.should_upload_keys:
                response = await client.keys_upload()
                if isinstance(response, nio.ErrorResponse):
                    raise RuntimeError(f"{account.user_id}: keys upload failed: {response}")
            user._sync_task = asyncio.create_task(user._sync_loop(), name=f"sync {account.user_id}")
            try:
                await asyncio.wait_for(user._synced_once.wait(), first_sync_timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"{account.user_id}: no successful sync from {homeserver} within "
                    f"{first_sync_timeout} s; errors: {user.sync_errors[-5:]}"
                ) from None
        except BaseException:
            await user.close()
            raise
        return user

    async def close(self) -> None:
        self._closed = True
        task, self._sync_task = self._sync_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.close()

    async def __aenter__(self) -> TestUser:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- background sync ----------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        client = self.client
        while not self._closed:
            try:
                response = await client.sync(timeout=SYNC_TIMEOUT_MS, sync_filter=SYNC_FILTER)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._sync_error(repr(exc))
                await asyncio.sleep(0.2)
                continue
            if not isinstance(response, nio.SyncResponse):
                self._sync_error(str(response))
                await asyncio.sleep(0.2)
                continue
            await self._ingest(response)
            self._synced_once.set()
            if client.olm:
                await self._crypto_housekeeping()

    def _sync_error(self, message: str) -> None:
        logger.debug("%s: sync failed: %s", self.user_id, message)
        self.sync_errors.append(message)
        del self.sync_errors[:-50]

    async def _crypto_housekeeping(self) -> None:
        client = self.client
        try:
            if client.outgoing_to_device_messages:
                await client.send_to_device_messages()
            if client.should_upload_keys:
                await client.keys_upload()
            if client.should_query_keys:
                await client.keys_query()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._sync_error(f"crypto housekeeping: {exc!r}")

    def _retry_decryption(self) -> None:
        """Like Element, try undecryptable events again once keys may have arrived (nio itself
        gives up at first sight, e.g. when the sender's device keys were not fetched yet)."""
        for index, (entry, megolm) in list(self._undecrypted.items()):
            try:
                event = self.client.decrypt_event(megolm)
            except Exception:  # noqa: S112 - still no key: try again after the next sync
                continue
            if isinstance(getattr(event, "source", None), dict):
                self._entries[index] = _Entry(entry.room_id, event.source, entry.section, True)
                del self._undecrypted[index]

    async def _ingest(self, response: nio.SyncResponse) -> None:
        new: list[tuple[_Entry, Any]] = []
        for section, rooms in (("join", response.rooms.join), ("leave", response.rooms.leave)):
            for room_id, info in rooms.items():
                for event in info.timeline.events:
                    entry = _Entry(
                        room_id, event.source, section, bool(getattr(event, "decrypted", 0))
                    )
                    new.append((entry, event if isinstance(event, nio.MegolmEvent) else None))
        for room_id, invite in response.rooms.invite.items():
            for event in invite.invite_state:
                source = getattr(event, "source", None)
                if not isinstance(source, dict):
                    continue
                if "content" not in source and isinstance(getattr(event, "content", None), dict):
                    # nio's InviteMemberEvent pops "content" out of its source dict.
                    source = {**source, "content": event.content}
                new.append((_Entry(room_id, source, "invite", False), None))
        async with self._changed:
            for entry, megolm in new:
                event_id = entry.event.get("event_id")
                if isinstance(event_id, str):
                    self._index_by_event_id.setdefault(event_id, len(self._entries))
                if megolm is not None:
                    self._undecrypted[len(self._entries)] = (entry, megolm)
                self._entries.append(entry)
            if self._undecrypted and self.client.olm:
                self._retry_decryption()
            # Notify even without events: room state (e.g. "encrypted") may have changed.
            self._changed.notify_all()

    # -- inspection ---------------------------------------------------------------------------

    def events(self, room_id: str | None = None) -> list[dict[str, Any]]:
        """Every buffered event (of one room, when given), in arrival order."""
        return [e.event for e in self._entries if room_id is None or e.room_id == room_id]

    def is_decrypted(self, event_id: str) -> bool:
        """Whether the buffered event arrived encrypted (and was decrypted by this client)."""
        index = self._index_by_event_id.get(event_id)
        return index is not None and self._entries[index].decrypted

    async def _wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while not condition():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{self.user_id}: timed out after {timeout} s waiting for {what}; "
                        f"recent sync errors: {self.sync_errors[-3:]}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    async def _wait_room_known(self, room_id: str, *, encrypted: bool = False) -> None:
        def known() -> bool:
            room = self.client.rooms.get(room_id)
            return room is not None and (room.encrypted or not encrypted)

        what = f"room {room_id} to appear in sync" + (" as encrypted" if encrypted else "")
        await self._wait_until(known, 10.0, what)

    # -- actions ------------------------------------------------------------------------------

    @staticmethod
    def _check(response: Any, action: str) -> Any:
        if isinstance(response, nio.ErrorResponse):
            raise RuntimeError(f"{action} failed: {response}")
        return response

    async def create_room(
        self,
        *,
        invite: Sequence[str] = (),
        is_direct: bool = False,
        name: str | None = None,
        encrypted: bool = False,
        **room_create_kwargs: Any,
    ) -> str:
        """Create a private room; returns its id once our sync knows it (so sends work)."""
        initial_state = list(room_create_kwargs.pop("initial_state", ()))
        if encrypted:
            initial_state.append(
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            )
        response = self._check(
            await self.client.room_create(
                name=name,
                invite=list(invite),
                is_direct=is_direct,
                initial_state=initial_state,
                **room_create_kwargs,
            ),
            f"{self.user_id}: create room",
        )
        await self._wait_room_known(response.room_id, encrypted=encrypted)
        return response.room_id

    async def invite(self, room_id: str, user_id: str) -> None:
        self._check(
            await self.client.room_invite(room_id, user_id),
            f"{self.user_id}: invite {user_id} to {room_id}",
        )

    async def join(self, room_id_or_alias: str) -> str:
        """Join a room; returns its id once our sync knows it."""
        response = self._check(
            await self.client.join(room_id_or_alias),
            f"{self.user_id}: join {room_id_or_alias}",
        )
        await self._wait_room_known(response.room_id)
        return response.room_id

    async def leave(self, room_id: str) -> None:
        self._check(await self.client.room_leave(room_id), f"{self.user_id}: leave {room_id}")

    async def send_text(
        self,
        room_id: str,
        body: str,
        *,
        formatted_body: str | None = None,
        extra_content: dict[str, Any] | None = None,
        msgtype: str = "m.text",
    ) -> str:
        """Send an ``m.room.message`` (encrypted when the room is); returns the event id."""
        content: dict[str, Any] = {"msgtype": msgtype, "body": body}
        if formatted_body is not None:
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = formatted_body
        if extra_content:
            content.update(extra_content)
        if self.client.olm:
            # nio refuses to send to a room it has not synced yet when encryption is enabled.
            await self._wait_room_known(room_id)
        response = self._check(
            await self.client.room_send(
                room_id, "m.room.message", content, ignore_unverified_devices=True
            ),
            f"{self.user_id}: send to {room_id}",
        )
        return response.event_id

    # -- waiting ------------------------------------------------------------------------------

    async def _wait(
        self,
        room_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        *,
        after_event_id: str | None = None,
        start_index: int = 0,
        what: str = "a matching event",
    ) -> dict[str, Any]:
        def matches(entry: _Entry) -> bool:
            if entry.room_id != room_id:
                return False
            try:
                return bool(predicate(entry.event))
            except Exception:  # a predicate reading a key another event type lacks
                return False

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        start: int | None = start_index
        if after_event_id is not None:
            start = None
        scanned = 0
        async with self._changed:
            while True:
                if start is None:
                    assert after_event_id is not None
                    index = self._index_by_event_id.get(after_event_id)
                    if index is not None:
                        start = index + 1
                if start is not None:
                    for i in range(max(scanned, start), len(self._entries)):
                        if matches(self._entries[i]):
                            return self._entries[i].event
                    scanned = len(self._entries)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(
                        self._timeout_message(room_id, what, timeout, after_event_id)
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    def _timeout_message(
        self, room_id: str, what: str, timeout: float, after_event_id: str | None
    ) -> str:
        lines = [f"{self.user_id}: no {what} in {room_id} within {timeout} s."]
        if after_event_id is not None:
            if after_event_id in self._index_by_event_id:
                lines.append(f"(only events after {after_event_id} counted)")
            else:
                lines.append(f"(event {after_event_id}, the starting point, never arrived)")
        arrived = [e for e in self._entries if e.room_id == room_id]
        lines.append(f"{len(arrived)} event(s) arrived in that room; the last ones:")
        lines.extend(f"  {_summary(e.event)}" for e in arrived[-15:])
        if self.sync_errors:
            lines.append(f"recent sync errors: {self.sync_errors[-3:]}")
        return "\n".join(lines)

    async def wait_for_event(
        self,
        room_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,
        after_event_id: str | None = None,
    ) -> dict[str, Any]:
        """The first buffered event of ``room_id`` matching ``predicate`` (raw dict), waiting for
        it when needed. A predicate that raises counts as no match."""
        return await self._wait(room_id, predicate, timeout, after_event_id=after_event_id)

    async def wait_for_message(
        self,
        room_id: str,
        *,
        sender: str,
        timeout: float = 10.0,
        after_event_id: str | None = None,
        msgtype: str | None = None,
    ) -> dict[str, Any]:
        """An ``m.room.message`` from ``sender`` (any msgtype unless given: text, notice...)."""

        def predicate(event: dict[str, Any]) -> bool:
            return (
                event.get("type") == "m.room.message"
                and event.get("sender") == sender
                and (msgtype is None or event["content"].get("msgtype") == msgtype)
            )

        what = f"m.room.message from {sender}" + (f" with msgtype {msgtype}" if msgtype else "")
        return await self._wait(
            room_id, predicate, timeout, after_event_id=after_event_id, what=what
        )

    async def wait_for_membership(
        self, room_id: str, user_id: str, membership: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The membership event making ``user_id`` ``membership`` (join, invite, leave, ban).

        Returns at once when the latest buffered membership of that user already matches;
        otherwise waits for a newer one. Our own invites come from the invite's stripped state.
        """

        def is_member_event(event: dict[str, Any]) -> bool:
            return event.get("type") == "m.room.member" and event.get("state_key") == user_id

        latest = None
        for i in range(len(self._entries) - 1, -1, -1):
            entry = self._entries[i]
            if entry.room_id == room_id and is_member_event(entry.event):
                latest = i
                break
        if latest is not None:
            if self._entries[latest].event.get("content", {}).get("membership") == membership:
                return self._entries[latest].event
            start = latest + 1
        else:
            start = 0
        return await self._wait(
            room_id,
            lambda e: is_member_event(e) and e["content"].get("membership") == membership,
            timeout,
            start_index=start,
            what=f"membership {membership!r} of {user_id}",
        )

    async def ask(
        self, room_id: str, body: str, *, sender: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send ``body`` and return the next message from ``sender`` after it."""
        event_id = await self.send_text(room_id, body)
        return await self.wait_for_message(
            room_id, sender=sender, timeout=timeout, after_event_id=event_id
        )

    def __repr__(self) -> str:
        return f"<TestUser {self.user_id} events={len(self._entries)}>"
