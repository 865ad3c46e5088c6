"""A malicious homeserver cannot get its own device keys cross-signed as the bot's device.

Between the bot's CrossSigning and the real Synapse sits a reverse proxy (tests/harness/
tampering_proxy.py) that forwards everything but, in the answers of keys/query, replaces the bot's
device entry with an attacker's freshly made ed25519/curve25519 keys. The bot must refuse them, log
`crypto.device_keys_mismatch`, and upload no signature; Synapse itself (asked directly) keeps only
the bot's genuine, unsigned device. Without the proxy the same device is then signed as before."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from structlog.testing import capture_logs

import bot.matrix.cross_signing
from bot.matrix.cross_signing import (
    CrossSigning,
    CrossSigningError,
    CrossSigningKeys,
    b64,
    canonical_json,
    public_key,
    sign_json,
    verify_json,
)
from tests.harness.bot import RunningBot, bot_config, write_config
from tests.harness.synapse import SynapseServer
from tests.harness.tampering_proxy import TamperingProxy

pytestmark = pytest.mark.synapse

SIGNATURES_UPLOAD = "/_matrix/client/v3/keys/signatures/upload"


@dataclass
class Attacker:
    """A device identity the attacker made: fresh ed25519 and curve25519 keys."""

    ed25519: Ed25519PrivateKey
    curve25519: str

    @classmethod
    def fresh(cls) -> Attacker:
        curve = (
            X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        return cls(Ed25519PrivateKey.generate(), b64(curve))

    @property
    def ed25519_public(self) -> str:
        return public_key(self.ed25519)

    def forge(
        self,
        original: dict[str, Any],
        *,
        ed25519: bool = True,
        curve25519: bool = True,
        also_signed_by: Ed25519PrivateKey | None = None,
        change: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """The bot's device entry with the attacker's keys, self-signed by the attacker's ed25519
        key as a real device's would be (so only a comparison with the bot's own keys tells)."""
        user_id, device_id = original["user_id"], original["device_id"]
        keys = dict(original["keys"])
        if ed25519:
            keys[f"ed25519:{device_id}"] = self.ed25519_public
        if curve25519:
            keys[f"curve25519:{device_id}"] = self.curve25519
        forged = {
            "algorithms": original["algorithms"],
            "device_id": device_id,
            "user_id": user_id,
            "keys": keys,
        }
        if change is not None:
            change(forged)
        forged["signatures"] = {
            user_id: {f"ed25519:{device_id}": b64(self.ed25519.sign(canonical_json(forged)))}
        }
        if also_signed_by is not None:  # e.g. a signature by the bot's own self-signing key
            forged = sign_json(forged, also_signed_by, user_id)
        forged["unsigned"] = original.get("unsigned", {})
        return forged


def query_synapse(synapse: SynapseServer, user_id: str) -> dict[str, Any]:
    """keys/query on the real Synapse, bypassing the proxy, as another user."""
    viewer = synapse.fresh_account("viewer")
    return httpx.post(
        f"{synapse.base_url}/_matrix/client/v3/keys/query",
        headers={"Authorization": f"Bearer {viewer.access_token}"},
        json={"device_keys": {user_id: []}},
    ).json()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def test_forged_device_keys_from_the_homeserver_are_never_cross_signed(
    synapse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    account = synapse.fresh_account("bot")
    data_dir = tmp_path / "data"
    config = write_config(
        tmp_path / "config.toml", bot_config(synapse, account, data_dir, encryption=True)
    )
    attacker = Attacker.fresh()
    made: list[dict[str, Any]] = []

    async with TamperingProxy(synapse.base_url, account.user_id, forge=attacker.forge) as proxy:

        def through_proxy(homeserver: str, *args: Any, **kwargs: Any) -> CrossSigning:
            assert homeserver == synapse.base_url
            made.append(kwargs)
            return CrossSigning(proxy.base_url, *args, **kwargs)

        # Only CrossSigning talks to the proxy; the bot's Matrix client talks to Synapse directly.
        monkeypatch.setattr(bot.matrix.cross_signing, "CrossSigning", through_proxy)
        bot_run = RunningBot(config, account)
        with capture_logs() as logs:
            await bot_run.start()
        try:
            credentials = json.loads((data_dir / "matrix-credentials.json").read_text())
            device_id, token = credentials["device_id"], credentials["access_token"]
            own = dict(made[-1]["identity_keys"])
            assert proxy.forged_answers >= 1, "the proxy never served the forged device"

            # The real Synapse holds the bot's genuine device: its keys are what the bot passed.
            answer = query_synapse(synapse, account.user_id)
            genuine = answer["device_keys"][account.user_id][device_id]
            assert genuine["keys"] == {
                f"ed25519:{device_id}": own["ed25519"],
                f"curve25519:{device_id}": own["curve25519"],
            }

            # No signature over the attacker's keys was uploaded; no signature at all, in fact.
            uploads = json.dumps(proxy.posted(SIGNATURES_UPLOAD))
            assert attacker.ed25519_public not in uploads, "the forged keys were cross-signed"
            assert proxy.posted(SIGNATURES_UPLOAD) == []

            # Refused and logged, at error level, naming the device.
            mismatches = events(logs, "crypto.device_keys_mismatch")
            assert len(mismatches) == 1, logs
            mismatch = mismatches[0]
            assert mismatch["log_level"] == "error" and mismatch["device_id"] == device_id
            assert mismatch["already_signed"] is False
            assert set(mismatch["mismatched"]) == {
                f"ed25519:{device_id}",
                f"curve25519:{device_id}",
            }
            assert mismatch["claimed_ed25519"] == attacker.ed25519_public
            assert mismatch["claimed_curve25519"] == attacker.curve25519
            failed = events(logs, "crypto.cross_signing_failed")
            assert len(failed) == 1 and "do not match" in failed[0]["error"], logs
            assert not events(logs, "crypto.cross_signing"), "cross-signing claims success"
            # Nothing but public keys in the log: no private key seed, no access token.
            seeds = json.loads((data_dir / "cross-signing-keys.json").read_text())
            assert not [s for s in [*seeds.values(), token] if s in repr(logs)]
            keys = CrossSigningKeys.load(data_dir / "cross-signing-keys.json")
            assert keys is not None

            # Synapse, asked directly, has the bot's keys only, signed by nobody but
            # the device itself; the attacker's keys appear nowhere.
            ssk = public_key(keys.self_signing)
            assert answer["self_signing_keys"][account.user_id]["keys"] == {f"ed25519:{ssk}": ssk}
            assert list(genuine["signatures"]) == [account.user_id]
            assert list(genuine["signatures"][account.user_id]) == [f"ed25519:{device_id}"]
            assert not verify_json(genuine, account.user_id, ssk)
            assert attacker.ed25519_public not in json.dumps(answer)
            assert attacker.curve25519 not in json.dumps(answer)

            # Every other forgery is refused too: each key that matters, the ids, extra keys,
            # and any other change to what the device signed.
            def signer() -> CrossSigning:
                return CrossSigning(
                    proxy.base_url, account.user_id, device_id, token, data_dir, identity_keys=own
                )

            def extra_key(device: dict[str, Any]) -> None:
                device["keys"]["ed25519:EVIL"] = attacker.ed25519_public

            def other_device_id(device: dict[str, Any]) -> None:
                device["device_id"] = "EVILDEVICE"

            def other_user_id(device: dict[str, Any]) -> None:
                device["user_id"] = "@mallory:localhost"

            def other_algorithms(device: dict[str, Any]) -> None:
                device["algorithms"] = ["m.olm.v1.curve25519-aes-sha2"]

            forgeries: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
                "ed25519 only": lambda d: attacker.forge(d, curve25519=False),
                "curve25519 only": lambda d: attacker.forge(d, ed25519=False),
                "extra key": lambda d: attacker.forge(
                    d, ed25519=False, curve25519=False, change=extra_key
                ),
                "device_id": lambda d: attacker.forge(
                    d, ed25519=False, curve25519=False, change=other_device_id
                ),
                "user_id": lambda d: attacker.forge(
                    d, ed25519=False, curve25519=False, change=other_user_id
                ),
                # Our keys, but content our device never signed (the signature is the attacker's).
                "algorithms": lambda d: attacker.forge(
                    d, ed25519=False, curve25519=False, change=other_algorithms
                ),
            }
            for name, forge in forgeries.items():
                proxy.forge = forge
                with capture_logs() as logs, pytest.raises(CrossSigningError, match="do not match"):
                    await signer().ensure(account.password)
                assert [e["device_id"] for e in events(logs, "crypto.device_keys_mismatch")] == [
                    device_id
                ], name
            assert proxy.posted(SIGNATURES_UPLOAD) == []

        finally:
            await bot_run.stop()

        # Without the proxy, the same device (same credentials, same Olm account) is signed.
        monkeypatch.undo()
        assert bot.matrix.cross_signing.CrossSigning is CrossSigning
        with capture_logs() as logs:
            await bot_run.start()
        try:
            assert (
                json.loads((data_dir / "matrix-credentials.json").read_text())["device_id"]
                == device_id
            )
            done = events(logs, "crypto.cross_signing")
            assert [e["outcome"] for e in done] == ["kept, device signed"], logs
            assert not events(logs, "crypto.device_keys_mismatch")
            answer = query_synapse(synapse, account.user_id)
            device = answer["device_keys"][account.user_id][device_id]
            assert device["keys"] == genuine["keys"]
            assert verify_json(device, account.user_id, ssk), "the genuine device is not signed"

            # Now signed: a forged entry that even carries a valid signature by our self-signing
            # key (as if an attacker had got it signed before) is reported, not trusted.
            proxy.forge = lambda d: attacker.forge(d, also_signed_by=keys.self_signing)
            with (
                capture_logs() as logs,
                pytest.raises(
                    CrossSigningError, match="signature by our self-signing key but do not match"
                ),
            ):
                await signer().ensure(account.password)
            [mismatch] = events(logs, "crypto.device_keys_mismatch")
            assert mismatch["log_level"] == "error" and mismatch["device_id"] == device_id
            assert mismatch["already_signed"] is True
            assert not events(logs, "crypto.cross_signing")

            # Untampered, through the same proxy: confirmed as already signed, nothing uploaded.
            proxy.forge = None
            assert await signer().ensure(account.password) == "kept, device already signed"
            assert proxy.posted(SIGNATURES_UPLOAD) == []

            # Synapse still has exactly the genuine device, signed once by our self-signing key.
            answer = query_synapse(synapse, account.user_id)
            assert list(answer["device_keys"][account.user_id]) == [device_id]
            device = answer["device_keys"][account.user_id][device_id]
            assert device["keys"] == genuine["keys"]
            assert set(device["signatures"][account.user_id]) == {
                f"ed25519:{device_id}",
                f"ed25519:{ssk}",
            }
            assert attacker.ed25519_public not in json.dumps(answer)
        finally:
            await bot_run.stop()
