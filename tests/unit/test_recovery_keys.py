"""The recovery key's encoding, secret storage's encryption and the key backup's encryption, checked
against known values: the secret-storage test vectors published with mautrix-python (made by
Element: a key description, its recovery key, and a cross-signing master key it encrypted), and an
independent implementation of the backup algorithm from the spec's steps (X25519, HKDF-SHA256,
AES-256-CBC, the HMAC truncated to 8 bytes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from types import SimpleNamespace

import pytest
import vodozemac
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bot.config import ConfigError, load_config
from bot.matrix.room_key_backup import BackupError, BackupKey, key_backup_data, session_payload
from bot.matrix.secret_storage import (
    ALGORITHM,
    SecretStorageError,
    StorageKey,
    decrypt_secret,
    encrypt_secret,
)
from bot.recovery_key import RecoveryKeyError, decode_recovery_key, encode_recovery_key

# -- known values (Element-made; published as test data with mautrix-python's ssss tests) ---------
KEY1_ID = "gEJqbfSEMnP5JXXcukpXEX1l0aI3MDs0"
KEY1_RECOVERY_KEY = "EsTE s92N EtaX s2h6 VQYF 9Kao tHYL mkyL GKMh isZb KJ4E tvoC"
KEY1_DESCRIPTION = {
    "algorithm": ALGORITHM,
    "iv": "xxkTK0L4UzxgAFkQ6XPwsw",
    "mac": "MEhooO0ZhFJNxUhvRMSxBnJfL20wkLgle3ocY0ee/eA",
}
KEY1_MASTER = {
    "encrypted": {
        KEY1_ID: {
            "iv": "BpKP9nQJTE9jrsAssoxPqQ==",
            "ciphertext": "fNRiiiidezjerTgV+G6pUtmeF3izzj5re/mVvY0hO2kM6kYGrxLuIu2ej80=",
            "mac": "/gWGDGMyOLmbJp+aoSLh5JxCs0AdS6nAhjzpe+9G2Q0=",
        }
    }
}
KEY1_MASTER_SEED = "68f97fd1922eecf6b82bb890d24d0652984e7a1d703b9e867b7ebaf7feb95b6f"
KEY2_RECOVERY_KEY = "EsUC xSxt XJgQ dz19 8WBZ rHdE GZo7 ybsn EFmG Y5HY MDAG GNWe"
KEY2_DESCRIPTION = {
    "algorithm": ALGORITHM,
    "iv": "O0BOvTqiIAYjC+RMcyHfWw==",
    "mac": "7k6OruQlWg0UmQjxGZ0ad4Q6DdwkgnoI7G6X3IjBYtI=",
}

# -- the recovery key ------------------------------------------------------------------------------


def test_known_recovery_keys_decode_and_encode_back_exactly():
    for text in (KEY1_RECOVERY_KEY, KEY2_RECOVERY_KEY):
        key = decode_recovery_key(text)
        assert len(key) == 32
        assert encode_recovery_key(key) == text


def test_round_trip_prefix_parity_and_grouping():
    for _ in range(200):
        key = os.urandom(32)
        text = encode_recovery_key(key)
        assert text.startswith("Es")
        groups = text.split(" ")
        assert all(len(g) == 4 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 4
        assert decode_recovery_key(text) == key
        # Spaces, line breaks and a missing grouping do not matter.
        assert decode_recovery_key("  " + text.replace(" ", "") + "\n") == key
    # Leading zero bytes in the key survive base58.
    assert decode_recovery_key(encode_recovery_key(bytes(32))) == bytes(32)


def _base58(raw: bytes) -> str:
    from bot.recovery_key import _b58encode

    return _b58encode(raw)


def test_typing_errors_are_caught_by_the_parity_byte():
    """One parity byte catches a changed character unless the change happens to keep the XOR of
    all bytes (about 1 in 256); such a key is still a different key, which secret storage's check
    value refuses."""
    text = KEY1_RECOVERY_KEY.replace(" ", "")
    original = decode_recovery_key(text)
    caught = slipped = 0
    for position in range(2, len(text)):
        for replacement in "23abcXYZ":
            if replacement == text[position]:
                continue
            typo = text[:position] + replacement + text[position + 1 :]
            try:
                decoded = decode_recovery_key(typo)
            except RecoveryKeyError:
                caught += 1
            else:
                slipped += 1
                assert decoded != original
                assert not StorageKey(KEY1_ID, decoded).matches(KEY1_DESCRIPTION)
    assert caught + slipped > 300
    assert slipped <= (caught + slipped) * 0.02


def test_bad_prefix_length_and_characters_are_refused_with_friendly_words():
    key = os.urandom(32)
    wrong_prefix = bytes([0x8B, 0x02]) + key
    wrong_prefix += bytes([_parity(wrong_prefix)])
    short = bytes([0x8B, 0x01]) + key[:31]
    short += bytes([_parity(short)])
    cases = {
        _base58(wrong_prefix): "not a recovery key",
        _base58(short): "not a recovery key",
        "EsTE s92N EtaX s2h6 VQYF 9Kao tHYL mkyL GKMh isZb KJ4E tvo0": "character",
        "   ": "empty",
        "x" * 500: "too long",
    }
    for text, words in cases.items():
        with pytest.raises(RecoveryKeyError) as problem:
            decode_recovery_key(text)
        assert words in str(problem.value)
        assert text.strip()[:12] not in str(problem.value) or not text.strip()


def _parity(data: bytes) -> int:
    parity = 0
    for byte in data:
        parity ^= byte
    return parity


def test_config_refuses_a_bad_recovery_key_without_echoing_it(tmp_path):
    secret = "EsTE s92N EtaX s2h6 VQYF 9Kao tHYL mkyL GKMh isZb KJ4E tvoX"
    (tmp_path / "rk").write_text(secret + "\n")
    (tmp_path / "config.toml").write_text(
        '[matrix]\nhomeserver = "http://127.0.0.1:8008"\nuser_id = "@bot:localhost"\n'
        'password = "x"\nrecovery_key_file = "rk"\n'
    )
    with pytest.raises(ConfigError) as problem:
        load_config(tmp_path / "config.toml", env={})
    text = "\n".join(problem.value.problems)
    assert "matrix.recovery_key" in text and "typing error" in text
    assert "tvoX" not in text and "EsTE" not in text
    (tmp_path / "rk").write_text(KEY1_RECOVERY_KEY + "\n")
    config = load_config(tmp_path / "config.toml", env={})
    assert config.matrix.recovery_key is not None
    assert KEY1_RECOVERY_KEY not in repr(config)
    assert config.matrix.recovery_key.get_secret_value() == KEY1_RECOVERY_KEY


# -- secret storage --------------------------------------------------------------------------------


def test_known_key_descriptions_recognise_their_keys_and_only_them():
    key1 = StorageKey(KEY1_ID, decode_recovery_key(KEY1_RECOVERY_KEY))
    key2 = StorageKey("other", decode_recovery_key(KEY2_RECOVERY_KEY))
    assert key1.matches(KEY1_DESCRIPTION) and key2.matches(KEY2_DESCRIPTION)
    assert not key1.matches(KEY2_DESCRIPTION) and not key2.matches(KEY1_DESCRIPTION)
    assert not key1.matches({**KEY1_DESCRIPTION, "mac": KEY2_DESCRIPTION["mac"]})
    assert not key1.matches({**KEY1_DESCRIPTION, "iv": "!!"})
    assert not key1.matches({"algorithm": ALGORITHM})  # no check value: never trusted blindly
    assert not key1.matches({**KEY1_DESCRIPTION, "algorithm": "m.other"})


def test_the_known_master_key_decrypts_with_its_key_and_not_otherwise():
    key1 = StorageKey(KEY1_ID, decode_recovery_key(KEY1_RECOVERY_KEY))
    seed = key1.decrypt("m.cross_signing.master", KEY1_MASTER)
    assert base64.b64decode(seed + "=" * (-len(seed) % 4)).hex() == KEY1_MASTER_SEED
    with pytest.raises(SecretStorageError):  # the name is part of the key derivation
        key1.decrypt("m.cross_signing.self_signing", KEY1_MASTER)
    impostor = StorageKey(KEY1_ID, decode_recovery_key(KEY2_RECOVERY_KEY))
    with pytest.raises(SecretStorageError):
        impostor.decrypt("m.cross_signing.master", KEY1_MASTER)
    with pytest.raises(SecretStorageError):  # encrypted for another key id
        StorageKey("other", key1.key).decrypt("m.cross_signing.master", KEY1_MASTER)


def test_secrets_round_trip_with_fresh_ivs_and_bit_63_clear():
    key = StorageKey("id", os.urandom(32))
    ivs = set()
    for _ in range(50):
        secret = base64.b64encode(os.urandom(32)).decode().rstrip("=")
        content = key.encrypt("m.megolm_backup.v1", secret)
        encrypted = content["encrypted"]["id"]
        iv = base64.b64decode(encrypted["iv"])
        assert len(iv) == 16 and iv[8] & 0x80 == 0
        ivs.add(encrypted["iv"])
        assert key.decrypt("m.megolm_backup.v1", content) == secret
    assert len(ivs) == 50
    # A flipped ciphertext bit is caught by the MAC, not decrypted into garbage.
    raw = encrypt_secret(key.key, "n", b"secret")
    flipped = bytearray(base64.b64decode(raw["ciphertext"]))
    flipped[0] ^= 1
    with pytest.raises(SecretStorageError):
        decrypt_secret(key.key, "n", {**raw, "ciphertext": base64.b64encode(flipped).decode()})
    # A description made here is recognised by the key and by nothing else.
    assert key.matches(key.description())
    assert not StorageKey("id", os.urandom(32)).matches(key.description())


# -- the room-key backup ---------------------------------------------------------------------------


def _spec_decrypt(private: bytes, session_data: dict[str, str]) -> dict:
    """The spec's steps, written independently of vodozemac."""

    def unb64(text: str) -> bytes:
        return base64.b64decode(text + "=" * (-len(text) % 4))

    shared = X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(unb64(session_data["ephemeral"]))
    )
    okm = HKDF(algorithm=hashes.SHA256(), length=80, salt=bytes(32), info=b"").derive(shared)
    aes_key, mac_key, iv = okm[:32], okm[32:64], okm[64:]
    # The spec's MAC: HMAC-SHA256 over an empty string (libolm's historic slip), first 8 bytes.
    assert unb64(session_data["mac"]) == hmac.digest(mac_key, b"", hashlib.sha256)[:8]
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(unb64(session_data["ciphertext"])) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return json.loads(unpadder.update(padded) + unpadder.finalize())


def _megolm_session() -> SimpleNamespace:
    """A real megolm inbound session (vodozemac), shaped like nio's InboundGroupSession."""
    outbound = vodozemac.GroupSession()
    inbound = vodozemac.InboundGroupSession(outbound.session_key)
    return SimpleNamespace(
        id=inbound.session_id,
        room_id="!room:example.org",
        sender_key="senderCurve25519Key",
        ed25519="senderEd25519Key",
        forwarding_chain=[],
        first_known_index=inbound.first_known_index,
        export_session=lambda index: inbound.export_at(index).to_base64(),
        outbound=outbound,
    )


def test_backup_round_trip_and_the_spec_format():
    key = BackupKey.generate()
    session = _megolm_session()
    data = key_backup_data(session, key)
    assert data["first_message_index"] == 0 and data["forwarded_count"] == 0
    assert set(data["session_data"]) == {"ephemeral", "ciphertext", "mac"}
    assert all("=" not in v for v in data["session_data"].values())  # unpadded base64
    payload = key.decrypt(data["session_data"])
    assert payload == session_payload(session)
    assert payload["algorithm"] == "m.megolm.v1.aes-sha2"
    # An independent implementation of the spec reads the same thing.
    private = base64.b64decode(key.to_base64() + "=")
    assert _spec_decrypt(private, data["session_data"]) == payload
    # The exported key really decrypts the sender's messages.
    imported = vodozemac.InboundGroupSession.import_session(
        vodozemac.ExportedSessionKey(payload["session_key"])
    )
    message = session.outbound.encrypt(b"before the wipe")
    assert imported.decrypt(message).plaintext == b"before the wipe"
    # The private key survives its text form (as secret storage holds it).
    assert BackupKey.from_base64(key.to_base64()).public_key == key.public_key


def test_backup_data_for_another_key_or_damaged_does_not_decrypt():
    key = BackupKey.generate()
    data = key_backup_data(_megolm_session(), key)["session_data"]
    with pytest.raises(BackupError):
        BackupKey.generate().decrypt(data)
    with pytest.raises(BackupError):
        key.decrypt({**data, "ciphertext": data["ciphertext"][:-4]})
    with pytest.raises(BackupError):
        key.decrypt("not an object")
    with pytest.raises(BackupError):
        BackupKey.from_base64("not a key")


# -- the uploader: batches, remembers, stops on a replaced backup ----------------------------------


class _FakeApi:
    """Records the uploads; answers like /room_keys/keys."""

    def __init__(self, status: int = 200, answer: dict | None = None) -> None:
        self.puts: list[dict] = []
        self.status, self.answer = status, answer or {"etag": "1", "count": 0}

    async def request(self, method, path, body=None, params=None):  # type: ignore[no-untyped-def]
        assert (method, path) == ("PUT", "/_matrix/client/v3/room_keys/keys")
        assert params == {"version": "7"}
        self.puts.append(body)
        return self.status, self.answer


def _store_with(count: int) -> SimpleNamespace:
    sessions = []
    for n in range(count):
        session = _megolm_session()
        session.room_id = f"!room{n % 3}:example.org"
        sessions.append(session)
    return SimpleNamespace(olm=SimpleNamespace(inbound_group_store=sessions))


async def test_uploads_are_paged_remembered_and_never_repeated(tmp_path):
    from bot.matrix.room_key_backup import PAGE, BackedUp, RoomKeyUploader

    client = _store_with(PAGE + 50)
    key = BackupKey.generate()
    api = _FakeApi()
    uploader = RoomKeyUploader(client, api, key, BackedUp(tmp_path / "state.json", "7"))
    assert await uploader.upload_pending() == PAGE + 50
    assert [sum(len(r["sessions"]) for r in put["rooms"].values()) for put in api.puts] == [
        PAGE,
        50,
    ]
    some_room = api.puts[0]["rooms"]["!room0:example.org"]["sessions"]
    assert all(
        set(v["session_data"]) == {"ephemeral", "ciphertext", "mac"} for v in some_room.values()
    )
    assert await uploader.upload_pending() == 0 and len(api.puts) == 2
    # A restart reads what was backed up; only a new session goes up.
    client.olm.inbound_group_store.append(_megolm_session())
    again = RoomKeyUploader(client, api, key, BackedUp(tmp_path / "state.json", "7"))
    assert await again.upload_pending() == 1
    # Another backup version starts afresh.
    assert len(BackedUp(tmp_path / "state.json", "8")) == 0
    assert oct((tmp_path / "state.json").stat().st_mode & 0o777) == "0o600"


async def test_a_replaced_backup_version_stops_the_uploader_with_a_reason(tmp_path):
    from bot.matrix.room_key_backup import BackedUp, RoomKeyUploader

    api = _FakeApi(403, {"errcode": "M_WRONG_ROOM_KEYS_VERSION", "current_version": "9"})
    uploader = RoomKeyUploader(
        _store_with(2), api, BackupKey.generate(), BackedUp(tmp_path / "s.json", "7")
    )
    with pytest.raises(BackupError, match="replaced"):
        await uploader.upload_pending()
    assert len(uploader.backed_up) == 0


# -- rotation: a new backup key, a new backup version ----------------------------------------------


class _FakeHomeserver:
    """Account data and key backup versions, as the AccountApi sees them (in memory)."""

    def __init__(self) -> None:
        self.account_data: dict[str, dict] = {}
        self.versions: list[dict] = []
        self.keys: dict[str, dict] = {}  # version -> rooms

    def api(self, *_: object) -> object:
        server = self

        class Api:
            user_id = "@bot:example.org"

            async def get_account_data(self, event_type: str) -> dict | None:
                return server.account_data.get(event_type)

            async def put_account_data(self, event_type: str, content: dict) -> None:
                server.account_data[event_type] = content

            async def request(self, method, path, body=None, params=None):  # type: ignore[no-untyped-def]
                if path.endswith("/room_keys/version") and method == "GET":
                    return (200, server.versions[-1]) if server.versions else (404, {})
                if path.endswith("/room_keys/version") and method == "POST":
                    version = str(len(server.versions) + 1)
                    server.versions.append({**body, "version": version})
                    return 200, {"version": version}
                if path.endswith("/room_keys/keys") and method == "GET":
                    return 200, {"rooms": server.keys.get(params["version"], {})}
                assert (method, params["version"]) == ("PUT", server.versions[-1]["version"])
                rooms = server.keys.setdefault(params["version"], {})
                for room, data in body["rooms"].items():
                    rooms.setdefault(room, {"sessions": {}})["sessions"].update(data["sessions"])
                return 200, {"etag": "1", "count": 0}

        return Api()


def _bot_client(sessions: list) -> SimpleNamespace:
    signer = vodozemac.Account()
    return SimpleNamespace(
        user_id="@bot:example.org", access_token="t", device_id="BOTDEVICE",
        olm=SimpleNamespace(
            inbound_group_store=sessions,
            sign_json=lambda value: signer.sign(json.dumps(value, sort_keys=True).encode()).to_base64(),
        ),
        add_to_device_callback=lambda *_: None,
    )  # fmt: skip


async def test_rotation_makes_a_new_backup_key_and_the_next_start_a_new_version(
    tmp_path, monkeypatch
):
    """Whoever read secret storage with a leaked recovery key holds the backup key stored there:
    `--rotate` replaces it, and the next start backs up every room key under a new version, so
    the old key decrypts nothing backed up from then on."""
    from bot.matrix import account_recovery
    from bot.matrix.cross_signing import CrossSigningKeys, public_key, verify_json
    from bot.matrix.room_key_backup import SECRET_NAME
    from bot.matrix.secret_storage import SecretStorage

    server = _FakeHomeserver()
    monkeypatch.setattr(account_recovery, "AccountApi", server.api)
    keys = CrossSigningKeys.generate()
    keys.save(tmp_path / "cross-signing-keys.json")
    sessions = [_megolm_session() for _ in range(3)]
    client = _bot_client(sessions)

    async def start_bot() -> account_recovery.AccountRecovery:
        recovery = account_recovery.AccountRecovery(
            "http://hs.invalid", client, tmp_path, recovery_key=None
        )
        uploader = await recovery.start_backup()
        assert uploader is not None
        await uploader.upload_pending()
        await recovery.close()
        return recovery

    first = await account_recovery.set_up_recovery("http://hs.invalid", client.user_id, "t",
                                                   tmp_path)  # fmt: skip
    assert first.recovery_key is not None
    await start_bot()
    [old_version] = server.versions
    # The leak: someone opens secret storage with the first recovery key, takes the backup key.
    storage = SecretStorage(server.api())
    old_storage_key = await storage.open(decode_recovery_key(first.recovery_key))
    leaked = BackupKey.from_base64(await storage.get(old_storage_key, SECRET_NAME))
    assert leaked.public_key == old_version["auth_data"]["public_key"]

    rotated = await account_recovery.set_up_recovery("http://hs.invalid", client.user_id, "t",
                                                     tmp_path, rotate=True)  # fmt: skip
    assert rotated.recovery_key is not None and rotated.existed
    new_storage_key = await storage.open(decode_recovery_key(rotated.recovery_key))
    new_key = BackupKey.from_base64(await storage.get(new_storage_key, SECRET_NAME))
    assert new_key.public_key != leaked.public_key
    local = account_recovery.LocalBackupKey.load(tmp_path)
    assert local is not None and local.version is None  # the next start makes the version
    assert local.key.public_key == new_key.public_key
    # The old recovery key opens nothing now, the backup key least of all.
    with pytest.raises(SecretStorageError):
        await storage.open(decode_recovery_key(first.recovery_key))
    with pytest.raises(SecretStorageError):
        await storage.get(old_storage_key, SECRET_NAME)
    # The cross-signing keys are the same ones (not rotated), stored under the new key only.
    master = await storage.get(new_storage_key, "m.cross_signing.master")
    assert master is not None and master.rstrip("=") == account_recovery._seed(keys.master)

    # The next start: a new version for the new key, signed as before, every room key in it.
    await start_bot()
    assert len(server.versions) == 2
    new_version = server.versions[-1]
    auth = new_version["auth_data"]
    assert auth["public_key"] == new_key.public_key
    assert verify_json(auth, client.user_id, public_key(keys.master))
    assert f"ed25519:{client.device_id}" in auth["signatures"][client.user_id]
    backed_up = server.keys[new_version["version"]]
    entries = [d for room in backed_up.values() for d in room["sessions"].values()]
    assert len(entries) == len(sessions)
    for entry in entries:
        assert new_key.decrypt(entry["session_data"])["algorithm"] == "m.megolm.v1.aes-sha2"
        with pytest.raises(BackupError):
            leaked.decrypt(entry["session_data"])
    assert server.keys[old_version["version"]]  # the old version stays as it was
