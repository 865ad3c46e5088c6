"""The benchmarks' baseline: a minimal matrix-nio client, no bot logic, in a process of its own.

* ``echo``: answers a message ``!ping`` with ``Pong!`` (an ``m.notice`` replying to it, as the
  bot's reply does), the floor of the bot's command round trip and throughput;
* ``relay``: asks the model stub (one request, not streamed) with the message and posts the
  answer as one ``m.notice``: the floor of the bot's assistant, without typing notices,
  placeholders, edits, history, quotas or a database.

Either joins every room it is invited to. It takes over the account's access token and device,
or, given a ``password`` instead, logs in and creates a device of its own (as the bot does when it
starts: bench/startup.py times it so). Each message is handled in a task of its own, so a
slow answer never holds up the sync (a minimal but not a naive client). With ``encryption``, the
client keeps its keys in ``store`` and uploads them as the bot does, so both pay for the same
crypto housekeeping per sync; the rooms of the benchmarks are plain.

Not a benchmark: ``python bench/echo_bot.py SPEC.json`` (see ``echo_spec()`` in common.py) prints
``ready`` after its first sync and runs until SIGTERM. Not imported by the bot nor the tests."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nio

if TYPE_CHECKING:
    import httpx

LONG_POLL_MS = 30_000


async def serve(spec: dict[str, Any]) -> None:
    encryption = bool(spec.get("encryption"))
    store = Path(spec["store"])  # made by main()
    config = nio.AsyncClientConfig(encryption_enabled=encryption, store_sync_tokens=False)
    client = nio.AsyncClient(
        spec["homeserver"], spec["user_id"], device_id=spec.get("device_id"),
        store_path=str(store), config=config,
    )  # fmt: skip
    if spec.get("access_token"):
        client.restore_login(spec["user_id"], spec["device_id"], spec["access_token"])
    else:
        logged_in = await client.login(spec["password"], device_name="echo bot")
        if not isinstance(logged_in, nio.LoginResponse):
            raise RuntimeError(f"login failed: {logged_in}")
    me = spec["user_id"]
    tasks: set[asyncio.Task[Any]] = set()
    http: httpx.AsyncClient | None = None
    if spec.get("mode") == "relay":  # imported only here: an echo bot does not need it
        import httpx

        http = httpx.AsyncClient(timeout=60)

    def soon(coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def pong(room: nio.MatrixRoom, event: nio.RoomMessageText) -> None:
        await client.room_send(room.room_id, "m.room.message", {
            "msgtype": "m.notice", "body": "Pong!",
            "m.relates_to": {"m.in_reply_to": {"event_id": event.event_id}},
        }, ignore_unverified_devices=True)  # fmt: skip

    async def relay(room: nio.MatrixRoom, event: nio.RoomMessageText) -> None:
        assert http is not None
        response = await http.post(
            f"{spec['stub_url']}/chat/completions",
            headers={"Authorization": f"Bearer {spec['api_key']}"},
            json={"model": "stub-model", "messages": [{"role": "user", "content": event.body}]},
        )
        answer = response.json()["choices"][0]["message"]["content"]
        await client.room_send(room.room_id, "m.room.message", {
            "msgtype": "m.notice", "body": answer,
            "m.relates_to": {"m.in_reply_to": {"event_id": event.event_id}},
        }, ignore_unverified_devices=True)  # fmt: skip

    async def on_message(room: nio.MatrixRoom, event: nio.RoomMessageText) -> None:
        if event.sender == me:
            return
        if spec.get("mode") == "relay":
            soon(relay(room, event))
        elif event.body.strip() == "!ping":
            soon(pong(room, event))

    async def on_invite(room: nio.MatrixRoom, event: nio.InviteMemberEvent) -> None:
        if event.state_key == me and event.membership == "invite":
            soon(client.join(room.room_id))

    client.add_event_callback(on_message, nio.RoomMessageText)  # type: ignore[arg-type]
    client.add_event_callback(on_invite, nio.InviteMemberEvent)  # type: ignore[arg-type]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def sync_forever() -> None:
        first = True
        while True:
            response = await client.sync(timeout=0 if first else LONG_POLL_MS, full_state=first)
            if not isinstance(response, nio.SyncResponse):
                print(f"sync failed: {response}", file=sys.stderr, flush=True)
                await asyncio.sleep(0.5)
                continue
            if client.olm:
                if client.outgoing_to_device_messages:
                    await client.send_to_device_messages()
                if client.should_upload_keys:
                    await client.keys_upload()
                if client.should_query_keys:
                    await client.keys_query()
                if client.should_claim_keys:
                    await client.keys_claim(client.get_users_for_key_claiming())
            if first:
                first = False
                print("ready", flush=True)

    syncing = asyncio.create_task(sync_forever())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({syncing, stopping}, return_when=asyncio.FIRST_COMPLETED)
    syncing.cancel()
    for task in list(tasks):
        task.cancel()
    if http is not None:
        await http.aclose()
    await client.close()
    if syncing.done() and not syncing.cancelled() and syncing.exception():
        raise syncing.exception()  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    Path(spec["store"]).mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
