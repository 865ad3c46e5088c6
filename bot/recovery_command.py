"""`community-bot recovery-key [--rotate]`: make the account's recovery key once and show it once.

It talks to the homeserver as the bot's own device (the access token in the config, else the one
the bot saved in its data dir), so the bot must have run once with encryption on: the
cross-signing keys it made are what the recovery key protects. The running bot picks up the new
backup key at its next start.

`--rotate` replaces the recovery key and the room-key backup key (so a leaked old recovery key
reads no room key backed up from the next start on). It does NOT rotate the cross-signing keys:
whoever read secret storage with the old key keeps them and could sign devices as the bot."""

from __future__ import annotations

from bot.errors import OperatorError
from bot.matrix.account_recovery import set_up_recovery
from bot.matrix.credentials import load_credentials

ADVICE = """\
Write it down or keep it in a password manager, OFFLINE, away from this server: with it, a bot
whose server is lost gets back its cross-signing identity (members see no new, unverified
session) and reads older encrypted messages from the key backup. Anyone who has it can do the same.

To restore the bot on a new machine with an empty data dir, give it this key:
  [matrix] recovery_key_file = "/run/secrets/bot-recovery-key"   (or CB_MATRIX_RECOVERY_KEY_FILE)
Restart the running bot now, so it starts backing up room keys."""

ROTATED = """
The room-key backup key was replaced too: at its next start the bot makes a new backup version
and backs up every room key again under it (the old version stays, readable with the old key
only). The cross-signing keys were NOT rotated: if the old recovery key leaked, whoever read the
secret storage with it holds them."""


async def recovery_key(config, *, rotate: bool) -> None:  # type: ignore[no-untyped-def]
    m = config.matrix
    if m.access_token is not None:
        token = m.access_token.get_secret_value()
    else:
        saved = load_credentials(config.data.dir, m.homeserver, m.user_id)
        if saved is None:
            raise OperatorError(
                f"the bot has not logged in yet ({config.data.dir} holds no device): start it "
                "once with matrix.encryption on, then run this again"
            )
        token = saved.access_token
    if not m.encryption:
        raise OperatorError("matrix.encryption is off: there are no keys to protect")
    done = await set_up_recovery(m.homeserver, m.user_id, token, config.data.dir, rotate=rotate)
    if done.recovery_key is None:
        print(
            f"{m.user_id} already has a recovery key (secret-storage key {done.key_id}). It was "
            "shown once, when it was made, and is not shown again.\nLost it, or it leaked? "
            "`community-bot recovery-key --rotate` makes a new one; the old one then opens "
            "nothing."
        )
        return
    made = "A new recovery key replaces the old one" if done.existed else "The recovery key"
    print(f"{made} for {m.user_id} (shown only this once):\n\n    {done.recovery_key}\n")
    print(ADVICE)
    if done.existed:
        print(ROTATED)
