"""Encryption keys that survive a lost server, against the real Synapse and matrix-js-sdk's Rust
crypto (Element's stack): the operator makes the recovery key with the real CLI, a member talks to
the bot, the bot's data dir is wiped, and a bot started with only the recovery key has the SAME
cross-signing identity (the member's client sees no identity change and a cross-signed new
device), answers, and decrypts a message sent before the wipe from the server-side key backup."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from nio import Event, MegolmEvent, RoomMessageText
from structlog.testing import capture_logs

from bot.matrix.cross_signing import CrossSigningKeys, public_key, verify_json
from bot.matrix.room_key_backup import ALGORITHM, SECRET_NAME, BackupKey
from bot.matrix.secret_storage import SecretStorageError, StorageKey
from bot.recovery_key import decode_recovery_key, encode_recovery_key
from tests.harness.bot import RunningBot, bot_config, write_config
from tests.harness.js_client import JsClient
from tests.harness.synapse import REPO_ROOT

pytestmark = pytest.mark.synapse

RECOVERY_KEY = re.compile(r"^\s+(Es(?:[1-9A-HJ-NP-Za-km-z]{1,4} ?){11,13})\s*$", re.MULTILINE)


async def recovery_key_cli(config: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "recovery-key", "--config", str(config), *args,
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


def as_bot(synapse: Any, token: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    answer = httpx.request(
        method, f"{synapse.base_url}{path}", headers={"Authorization": f"Bearer {token}"}, **kwargs
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def eventually(check: Any, timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {result!r}")
        await asyncio.sleep(0.5)


async def test_wiped_data_dir_restored_from_the_recovery_key(synapse, tmp_path: Path):
    account = synapse.fresh_account("bot")
    data_dir = tmp_path / "data"
    sections = bot_config(synapse, account, data_dir, encryption=True)
    config = write_config(tmp_path / "config.toml", sections)
    member = synapse.fresh_account("jess")
    bot_run = RunningBot(config, account)
    timings: dict[str, float] = {}

    async with JsClient() as jess:
        await jess.start(synapse.base_url, member, password=member.password)
        await jess.set_isolation("only_cross_signed")  # Element's "exclude insecure devices"
        await bot_run.start()
        try:
            master = public_key(CrossSigningKeys.load(data_dir / "cross-signing-keys.json").master)
            old_device = json.loads((data_dir / "matrix-credentials.json").read_text())

            # The operator makes the recovery key with the real CLI, once.
            code, out, err = await recovery_key_cli(config)
            assert code == 0, err
            [shown] = RECOVERY_KEY.findall(out)
            recovery_key = shown.strip()
            assert encode_recovery_key(decode_recovery_key(recovery_key)) == recovery_key
            assert recovery_key not in err  # shown on stdout only, never logged
            # Asked again: it says so, shows nothing and changes nothing.
            code, again, err = await recovery_key_cli(config)
            assert code == 0, err
            assert "already has a recovery key" in again and not RECOVERY_KEY.findall(again)
            token = old_device["access_token"]
            user = account.user_id
            account_data = f"/_matrix/client/v3/user/{user}/account_data"
            default = as_bot(synapse, token, "GET", f"{account_data}/m.secret_storage.default_key")
            description = as_bot(
                synapse, token, "GET", f"{account_data}/m.secret_storage.key.{default['key']}"
            )
            assert description["algorithm"] == "m.secret_storage.v1.aes-hmac-sha2"
            assert {"iv", "mac"} <= set(description)
            for name in ("master", "self_signing", "user_signing"):
                stored = as_bot(synapse, token, "GET", f"{account_data}/m.cross_signing.{name}")
                assert set(stored["encrypted"]) == {default["key"]}  # ciphertext only
            backup_secret = as_bot(synapse, token, "GET", f"{account_data}/m.megolm_backup.v1")
            assert set(backup_secret["encrypted"]) == {default["key"]}
            assert master not in json.dumps(stored)

            # The bot backs up from its next start: a version signed by its device and master key.
            await bot_run.restart()
            version = as_bot(synapse, token, "GET", "/_matrix/client/v3/room_keys/version")
            assert version["algorithm"] == ALGORITHM
            device_keys = as_bot(
                synapse, token, "POST", "/_matrix/client/v3/keys/query",
                json={"device_keys": {user: [old_device["device_id"]]}},
            )["device_keys"][user][old_device["device_id"]]  # fmt: skip
            auth = version["auth_data"]
            assert verify_json(auth, user, master)
            assert verify_json(auth, user, device_keys["keys"][f"ed25519:{old_device['device_id']}"],
                               f"ed25519:{old_device['device_id']}")  # fmt: skip

            # A member talks to the bot, encrypted; the bot backs up the room key it received.
            room = await jess.create_room(invite=[user], is_direct=True, encrypted=True)
            await jess.wait_membership(room, user, "join")
            ping = await jess.send_text(room, "!ping")
            reply = await jess.wait_message(room, sender=user, after_event_id=ping, timeout=20)
            assert reply["content"]["body"].startswith("Pong!"), reply
            secret_event = await jess.send_text(room, "sent before the server was lost")
            uploader = bot_run.app.recovery.uploader
            started = time.monotonic()
            backed = await eventually(
                lambda: _backed_up(uploader, room), what="the room key in the backup"
            )
            timings["key backed up after the message (s)"] = time.monotonic() - started
            on_server = as_bot(synapse, token, "GET", "/_matrix/client/v3/room_keys/keys",
                               params={"version": version["version"]})  # fmt: skip
            assert set(on_server["rooms"][room]["sessions"]) >= backed
            seen = await jess.user_identity(user)
            assert seen["known"] and seen["masterKey"] == master

            # The server is lost: the data dir (database, crypto store, keys) is gone.
            await bot_run.stop()
            shutil.rmtree(data_dir)
            key_file = tmp_path / "recovery-key"
            key_file.write_text(recovery_key + "\n")
            sections["matrix"]["recovery_key_file"] = str(key_file)
            write_config(config, sections)

            with capture_logs() as logs:
                started = time.monotonic()
                await bot_run.start()
                timings["restored start to ready (s)"] = time.monotonic() - started
            assert recovery_key not in json.dumps(logs, default=str)
            new_device = json.loads((data_dir / "matrix-credentials.json").read_text())
            assert new_device["device_id"] != old_device["device_id"]
            [outcome] = events(logs, "crypto.cross_signing")
            assert outcome["outcome"] == "restored, device signed", outcome
            assert outcome["master_key"] == master
            restored = CrossSigningKeys.load(data_dir / "cross-signing-keys.json")
            assert public_key(restored.master) == master
            [keys_restored] = events(logs, "crypto.room_keys_restored")
            assert keys_restored["sessions"] >= 1 and keys_restored["failed"] == 0

            # The restored bot reads the message sent before the wipe (keys from the backup).
            nio_client = _nio_client(bot_run)
            raw = as_bot(synapse, new_device["access_token"], "GET",
                         f"/_matrix/client/v3/rooms/{room}/event/{secret_event}")  # fmt: skip
            assert raw["type"] == "m.room.encrypted"  # as stored on the homeserver
            encrypted = Event.parse_encrypted_event(raw)
            assert isinstance(encrypted, MegolmEvent), encrypted
            encrypted.room_id = room
            decrypted = nio_client.decrypt_event(encrypted)
            assert isinstance(decrypted, RoomMessageText)
            assert decrypted.body == "sent before the server was lost"

            # The member's Element-grade client: the same identity (no "identity changed"), the
            # new device cross-signed by it; it shares keys with it and reads its answer.
            async def new_device_signed() -> bool:
                info = await jess.device_info(user)
                return any(
                    d["deviceId"] == new_device["device_id"] and d["signedByOwner"]
                    for d in info["devices"]
                )

            await eventually(new_device_signed, what="the new device, cross-signed, in js-sdk")
            seen = await jess.user_identity(user)
            assert seen["masterKey"] == master, seen
            assert not seen["needsUserApproval"] and not seen["verificationViolation"], seen
            ping = await jess.send_text(room, "!ping")
            reply = await jess.wait_message(room, sender=user, after_event_id=ping, timeout=20)
            assert reply["encrypted"] and not reply["decryptionFailure"], reply
            assert reply["content"]["body"].startswith("Pong!")
            assert reply["encryptionInfo"]["shieldReason"] != "UNSIGNED_DEVICE", reply
        finally:
            await bot_run.stop()
    print(f"\nkey recovery timings: {timings}")


async def _backed_up(uploader: Any, room: str) -> set[str]:
    return {session for r, session in uploader.backed_up._done if r == room}


def _nio_client(bot_run: RunningBot) -> Any:
    return bot_run.app.parts.sender._client


async def test_rotated_key_replaces_the_old_and_a_wrong_key_changes_nothing(synapse, tmp_path):
    """`--rotate` makes a new key under which every secret is stored again; the old key then opens
    nothing. The backup key is new too: the next start makes a new backup version whose key the
    old recovery key (and the backup key it read before) cannot open. A bot restored with the old
    key refuses to touch the identity (logged, key unlogged), and keeps serving; with the new key
    it restores the same master key."""
    account = synapse.fresh_account("bot")
    data_dir = tmp_path / "data"
    sections = bot_config(synapse, account, data_dir, encryption=True)
    config = write_config(tmp_path / "config.toml", sections)
    bot_run = RunningBot(config, account)
    await bot_run.start()
    try:
        master = public_key(CrossSigningKeys.load(data_dir / "cross-signing-keys.json").master)
        code, out, err = await recovery_key_cli(config)
        assert code == 0, err
        [old_key] = RECOVERY_KEY.findall(out)
        await bot_run.restart()  # the first backup version
        token = json.loads((data_dir / "matrix-credentials.json").read_text())["access_token"]
        account_data = f"/_matrix/client/v3/user/{account.user_id}/account_data"
        old_version = as_bot(synapse, token, "GET", "/_matrix/client/v3/room_keys/version")
        # The leak: whoever has the old recovery key reads the backup key in secret storage.
        old_storage = StorageKey(
            as_bot(synapse, token, "GET", f"{account_data}/m.secret_storage.default_key")["key"],
            decode_recovery_key(old_key),
        )
        secret = as_bot(synapse, token, "GET", f"{account_data}/{SECRET_NAME}")
        leaked = BackupKey.from_base64(old_storage.decrypt(SECRET_NAME, secret))
        assert leaked.public_key == old_version["auth_data"]["public_key"]

        code, out, err = await recovery_key_cli(config, "--rotate")
        assert code == 0, err
        assert "A new recovery key replaces the old one" in out
        assert "cross-signing keys were NOT rotated" in out
        [new_key] = RECOVERY_KEY.findall(out)
        assert decode_recovery_key(new_key) != decode_recovery_key(old_key)
        # The next start makes a new backup version for a new key the old one cannot open.
        await bot_run.restart()
        new_version = as_bot(synapse, token, "GET", "/_matrix/client/v3/room_keys/version")
        assert new_version["version"] != old_version["version"]
        assert new_version["auth_data"]["public_key"] != leaked.public_key
        assert verify_json(new_version["auth_data"], account.user_id, master)
        secret = as_bot(synapse, token, "GET", f"{account_data}/{SECRET_NAME}")
        with pytest.raises(SecretStorageError):
            old_storage.decrypt(SECRET_NAME, secret)
        new_storage = StorageKey(
            as_bot(synapse, token, "GET", f"{account_data}/m.secret_storage.default_key")["key"],
            decode_recovery_key(new_key),
        )
        stored = BackupKey.from_base64(new_storage.decrypt(SECRET_NAME, secret))
        assert stored.public_key == new_version["auth_data"]["public_key"]
        as_bot(synapse, token, "GET", "/_matrix/client/v3/room_keys/version/"
               + old_version["version"])  # the old version stays  # fmt: skip
    finally:
        await bot_run.stop()

    key_file = tmp_path / "recovery-key"
    sections["matrix"]["recovery_key_file"] = str(key_file)
    write_config(config, sections)
    for key, restored in ((old_key.strip(), False), (new_key.strip(), True)):
        shutil.rmtree(data_dir)
        key_file.write_text(key + "\n")
        with capture_logs() as logs:
            await bot_run.start()
        try:
            assert key not in json.dumps(logs, default=str)
            [outcome] = events(logs, "crypto.cross_signing") or [None]
            if restored:
                assert outcome is not None and outcome["outcome"] == "restored, device signed"
                assert outcome["master_key"] == master
                assert events(logs, "crypto.room_keys_restored")
            else:
                [unusable] = events(logs, "crypto.secret_storage_unusable")
                assert "does not match" in unusable["reason"]
                assert outcome is None and events(logs, "crypto.cross_signing_failed")
                assert not (data_dir / "cross-signing-keys.json").exists()
            # Either way the homeserver keeps the one identity.
            token = json.loads((data_dir / "matrix-credentials.json").read_text())["access_token"]
            query = as_bot(synapse, token, "POST", "/_matrix/client/v3/keys/query",
                           json={"device_keys": {account.user_id: []}})  # fmt: skip
            assert list(query["master_keys"][account.user_id]["keys"].values()) == [master]
        finally:
            await bot_run.stop()
