"""An Element-grade Matrix client for tests: matrix-js-sdk with its Rust crypto, run with Node.

Element Web's crypto stack is matrix-js-sdk + ``@matrix-org/matrix-sdk-crypto-wasm`` (the Rust
matrix-sdk-crypto compiled to wasm). ``tests/harness/js_client/client.mjs`` runs exactly that
stack in a Node process and is driven from here over newline-delimited JSON on stdin/stdout;
its npm dependencies are installed by ``scripts/install.sh`` (``npm ci``) into
``tests/harness/js_client/node_modules``.

Usage::

    async with JsClient() as alice:
        await alice.start(synapse.base_url, account, password=account.password)
        room = await alice.create_room(invite=[bob_id], is_direct=True, encrypted=True)
        sent = await alice.send_text(room, "hi")
        reply = await alice.wait_message(room, sender=bob_id, after_event_id=sent)
        assert reply["content"]["body"] == "hello" and reply["encrypted"]

Results are the client's JSON answers as dicts, with the SDK's camelCase keys (documented on each
method). A request the client refuses (``"ok": false``) raises :class:`JsClientError` (its
``error`` is the SDK's message); a client process that dies raises ``RuntimeError`` with the tail of
its stderr. The crypto store is in memory: a JsClient's device keys live as long as its process,
so use each account's device with one JsClient only, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal

from tests.harness.oidc import node_binary
from tests.harness.processes import tail, terminate, track, untrack
from tests.harness.synapse import REPO_ROOT, MatrixAccount

CLIENT_DIR = REPO_ROOT / "tests/harness/js_client"
CLIENT_SCRIPT = CLIENT_DIR / "client.mjs"

IsolationMode = Literal["all", "only_cross_signed"]


class JsClientError(RuntimeError):
    """The client answered ``ok: false``; ``error`` is its message (the SDK's error text)."""

    def __init__(self, op: str, error: str) -> None:
        super().__init__(f"js client {op} failed: {error}")
        self.op = op
        self.error = error


def _check_installed() -> None:
    if not (CLIENT_DIR / "node_modules/matrix-js-sdk/package.json").exists():
        raise RuntimeError(
            f"matrix-js-sdk is not installed ({CLIENT_DIR / 'node_modules'} is missing): "
            "run scripts/install.sh"
        )


class JsClient:
    """One ``node client.mjs`` process holding one logged-in matrix-js-sdk client.

    ``log_path``: where the process's stderr goes (the SDK's logs, at ``log_level``: trace, debug,
    info, warn, error or silent); by default a temporary file, deleted on a clean ``close()``.
    """

    def __init__(self, *, log_path: Path | None = None, log_level: str = "warn") -> None:
        self.log_level = log_level
        self._own_log = log_path is None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="js-client-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None
        self.user_id: str | None = None
        self.device_id: str | None = None
        self.versions: dict[str, str] = {}
        self.unsolicited: list[dict[str, Any]] = []  # lines that were neither answers nor "ready"
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._dead: str | None = None  # why the process is gone, once it is

    # -- process ---------------------------------------------------------------------------------

    async def _spawn(self, timeout: float) -> None:
        _check_installed()
        loop = asyncio.get_running_loop()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [node_binary(), str(CLIENT_SCRIPT)],
                cwd=CLIENT_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, "JS_CLIENT_LOG_LEVEL": self.log_level},
                start_new_session=True,  # its own process group: stop() signals exactly it
            )
        track(self)
        assert self.process.stdout is not None and self.process.stdin is not None
        reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), self.process.stdout
        )
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, self.process.stdin
        )
        self._writer = asyncio.StreamWriter(transport, protocol, None, loop)
        self._ready = loop.create_future()
        self._reader_task = asyncio.create_task(self._read(reader), name="js client reader")
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            raise RuntimeError(
                f"js client did not print ready within {timeout} s\n{self._diagnostics()}"
            ) from None
        self.versions = {k: ready[k] for k in ("sdkVersion", "cryptoVersion", "node") if k in ready}

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    self.unsolicited.append({"raw": line.decode(errors="replace")})
                    continue
                message_id = message.get("id") if isinstance(message, dict) else None
                if isinstance(message_id, int) and message_id in self._pending:
                    future = self._pending.pop(message_id)
                    if not future.done():
                        future.set_result(message)
                elif isinstance(message, dict) and message.get("event") == "ready":
                    if self._ready is not None and not self._ready.done():
                        self._ready.set_result(message)
                else:
                    self.unsolicited.append(message)
        finally:
            await self._on_exit()

    async def _on_exit(self) -> None:
        process = self.process
        code = None
        if process is not None:
            for _ in range(50):  # the pipe closes a moment before the process is reaped
                code = process.poll()
                if code is not None:
                    break
                await asyncio.sleep(0.02)
        self._dead = f"js client process exited (code {code})"
        error = RuntimeError(f"{self._dead}\n{self._diagnostics()}")
        for future in [*self._pending.values(), self._ready]:
            if future is not None and not future.done():
                future.set_exception(error)
        self._pending.clear()

    def _diagnostics(self) -> str:
        return f"--- tail of {self.log_path} (stderr) ---\n{tail(self.log_path)}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Kill the process (synchronous; used at exit by tests.harness.processes)."""
        process, self.process = self.process, None
        terminate(process, timeout=5)
        untrack(self)

    async def close(self) -> None:
        """Ask the client to stop (stopClient), then end the process."""
        failed = self._dead is not None and self.process is not None
        if self.running and self._dead is None:
            with contextlib.suppress(Exception):
                await self.request("stop", timeout=5)
            process = self.process
            for _ in range(100):
                if process is None or process.poll() is not None:
                    break
                await asyncio.sleep(0.02)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.stop()
        task, self._reader_task = self._reader_task, None
        if task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 2)
        if self._own_log and not failed:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    async def __aenter__(self) -> JsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- requests --------------------------------------------------------------------------------

    async def request(self, op: str, *, timeout: float = 30, **args: Any) -> dict[str, Any]:
        """Send ``{"op": op, **args}`` and return the answer (without ``id`` and ``ok``)."""
        if self._dead is not None:
            raise RuntimeError(f"{self._dead}\n{self._diagnostics()}")
        if self._writer is None:
            raise RuntimeError("js client is not started: call start() first")
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._writer.write(json.dumps({"id": request_id, "op": op, **args}).encode() + b"\n")
        try:
            await self._writer.drain()
            answer = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"js client: no answer to {op} within {timeout} s\n{self._diagnostics()}"
            ) from None
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise RuntimeError(
                f"js client: cannot send {op}: {exc}\n{self._diagnostics()}"
            ) from exc
        finally:
            self._pending.pop(request_id, None)
        if not answer.get("ok"):
            raise JsClientError(op, str(answer.get("error")))
        return {k: v for k, v in answer.items() if k not in ("id", "ok")}

    # -- ops -------------------------------------------------------------------------------------

    async def start(
        self,
        homeserver: str,
        account: MatrixAccount,
        *,
        password: str | None = None,
        cross_signing: bool = True,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Spawn the process, log in with the account's access token and device, start syncing
        (returns after the first sync). With ``password`` (e.g. ``account.password``) and
        ``cross_signing``, bootstraps cross-signing for the user, so this device is signed by its
        owner — as Element does on a fresh login.

        Returns ``{userId, deviceId, deviceKeys: {ed25519, curve25519}, crossSigning: {ready,
        publicKeysOnDevice, privateKeysCachedLocally, masterKey, deviceSignedByOwner,
        deviceCrossSigningVerified}, timings: {initCryptoMs, firstSyncMs, crossSigningMs,
        totalMs}}``."""
        if self.process is None:
            await self._spawn(timeout=min(timeout, 30))
        args: dict[str, Any] = {
            "homeserver": homeserver,
            "userId": account.user_id,
            "accessToken": account.access_token,
            "deviceId": account.device_id,
            "crossSigning": cross_signing,
            "timeoutMs": int(timeout * 1000),
        }
        if password is not None:
            args["password"] = password
        result = await self.request("start", timeout=timeout + 10, **args)
        self.user_id = result["userId"]
        self.device_id = result["deviceId"]
        return result

    async def set_isolation(
        self, mode: IsolationMode, *, error_on_verified_user_problems: bool = False
    ) -> None:
        """``"all"``: ``AllDevicesIsolationMode`` (Element's default; keys go to every device).
        ``"only_cross_signed"``: ``OnlySignedDevicesIsolationMode`` (Element's "exclude insecure
        devices": keys go only to devices cross-signed by their owner, and only their events
        are decrypted)."""
        await self.request(
            "set_isolation", mode=mode, errorOnVerifiedUserProblems=error_on_verified_user_problems
        )

    async def own_status(self) -> dict[str, Any]:
        """This client's cross-signing: ``{ready, publicKeysOnDevice, privateKeysCachedLocally,
        masterKey, deviceSignedByOwner, deviceCrossSigningVerified}``."""
        return await self.request("own_status")

    async def create_room(
        self,
        *,
        invite: list[str] | tuple[str, ...] = (),
        is_direct: bool = False,
        encrypted: bool = False,
        name: str | None = None,
        timeout: float = 15,
    ) -> str:
        """A private room (Element's ``trusted_private_chat`` preset and ``m.direct`` account data
        when direct); returns its id once this client's sync has it (and knows it is encrypted)."""
        args: dict[str, Any] = {
            "invite": list(invite),
            "isDirect": is_direct,
            "encrypted": encrypted,
            "timeoutMs": int(timeout * 1000),
        }
        if name is not None:
            args["name"] = name
        return (await self.request("create_room", timeout=timeout + 10, **args))["roomId"]

    async def join(self, room_id: str, *, timeout: float = 15) -> str:
        """Join; returns the room id once this client's sync shows it joined."""
        result = await self.request(
            "join", timeout=timeout + 10, roomId=room_id, timeoutMs=int(timeout * 1000)
        )
        return result["roomId"]

    async def wait_membership(
        self, room_id: str, user_id: str, membership: str = "join", *, timeout: float = 15
    ) -> None:
        """Wait until this client's view of ``room_id`` has ``user_id`` with ``membership``.
        Wait for a new member's join before sending: room keys go only to known members."""
        await self.request(
            "wait_membership",
            timeout=timeout + 10,
            roomId=room_id,
            userId=user_id,
            membership=membership,
            timeoutMs=int(timeout * 1000),
        )

    async def send_text(
        self,
        room_id: str,
        body: str,
        *,
        msgtype: str = "m.text",
        formatted_body: str | None = None,
        extra_content: dict[str, Any] | None = None,
        timeout: float = 30,
    ) -> str:
        """Send an ``m.room.message`` (encrypted in an encrypted room); returns the event id.
        Raises :class:`JsClientError` when the SDK refuses (e.g. its device-isolation mode)."""
        args: dict[str, Any] = {"roomId": room_id, "body": body, "msgtype": msgtype}
        if formatted_body is not None:
            args["formattedBody"] = formatted_body
        if extra_content:
            args["extraContent"] = extra_content
        return (await self.request("send_text", timeout=timeout, **args))["eventId"]

    async def wait_message(
        self,
        room_id: str,
        *,
        sender: str | None = None,
        after_event_id: str | None = None,
        timeout: float = 10,
        utd_grace: float = 3,
    ) -> dict[str, Any]:
        """The first ``m.room.message`` in ``room_id`` (from ``sender``) after ``after_event_id``,
        once decrypted. An event that stays undecryptable for ``utd_grace`` seconds is returned
        with ``decryptionFailure: True``. Raises :class:`JsClientError` on timeout.

        Returns ``{eventId, roomId, sender, type, wireType, encrypted, decryptionFailure,
        decryptionFailureReason, content, relatesTo, megolmSessionId, originServerTs,
        encryptionInfo}``:
        ``type``/``content`` are the decrypted ones (``content`` is None for a failure),
        ``wireType`` is ``m.room.encrypted`` for an encrypted event, ``relatesTo`` is
        ``m.relates_to`` (or None), ``encryptionInfo`` is ``{shieldColour, shieldReason}`` as Element
        would show (e.g. ``GREY``/``UNSIGNED_DEVICE`` for a device its owner did not cross-sign)."""
        args: dict[str, Any] = {
            "roomId": room_id,
            "timeoutMs": int(timeout * 1000),
            "utdGraceMs": int(utd_grace * 1000),
        }
        if sender is not None:
            args["sender"] = sender
        if after_event_id is not None:
            args["afterEventId"] = after_event_id
        return await self.request("wait_message", timeout=timeout + 10, **args)

    async def device_info(self, user_id: str) -> dict[str, Any]:
        """``user_id``'s devices as this client sees them (keys downloaded if needed):
        ``{userId, user: {known, isVerified, isCrossSigningVerified, wasCrossSigningVerified,
        needsUserApproval}, devices: [{deviceId, displayName, verification, signedByOwner,
        crossSigningVerified, localVerified, isVerified, curve25519, ed25519}]}``.
        ``user.known`` is whether the user has a cross-signing identity this client saw;
        ``signedByOwner`` whether the device is cross-signed by its owner."""
        return await self.request("device_info", userId=user_id)

    async def user_identity(self, user_id: str) -> dict[str, Any]:
        """``user_id``'s cross-signing identity as this client holds it: ``{known, masterKey,
        selfSigningKey, needsUserApproval, verificationViolation}`` (public keys, unpadded
        base64). ``needsUserApproval`` is Element's "identity changed" warning."""
        return await self.request("user_identity", userId=user_id)

    async def timeline(self, room_id: str | None = None) -> list[str]:
        """One summary line per buffered timeline event (for diagnostics)."""
        args = {"roomId": room_id} if room_id else {}
        return (await self.request("events", **args))["events"]

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<JsClient {self.user_id or '-'} {state}>"
