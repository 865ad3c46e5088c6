"""`make demo`: a complete local stack — Synapse on 127.0.0.1:8008 and the bot — in the foreground
until Ctrl-C. State lives in .demo/, so running it again reuses the same accounts and rooms."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bot.app import BotApp  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.logging import configure_logging  # noqa: E402
from tests.harness.bot import write_config  # noqa: E402
from tests.harness.llm_stub import LlmStub, message_text  # noqa: E402
from tests.harness.llm_stub_media import describe_images  # noqa: E402
from tests.harness.oidc import OidcProvider  # noqa: E402
from tests.harness.synapse import SynapseServer, free_port  # noqa: E402

DEMO = ROOT / ".demo"
PREFERRED_PORT = 8008
OIDC_SECRET = "community-bot-demo-secret"  # noqa: S105 - a throwaway local provider


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _accounts(synapse: SynapseServer) -> dict[str, dict[str, str]]:
    """The demo user and the bot account, created once and remembered."""
    path = DEMO / "accounts.json"
    if path.exists():
        return json.loads(path.read_text())
    accounts = {}
    for name in ("demo", "bot"):
        password = secrets.token_urlsafe(12)
        account = synapse.register(name, password, admin=False)
        accounts[name] = {"user_id": account.user_id, "password": password}
    path.write_text(json.dumps(accounts, indent=2))
    path.chmod(0o600)
    return accounts


# The stand-in model sees images, hears voice messages, speaks (`!media voice on`) and draws.
DEMO_MEDIA = {
    "model": "stub-model", "vision_models": ["stub-model"], "transcription_model": "stub-whisper",
    "speech_model": "stub-tts", "speech_format": "wav", "image_model": "stub-image",
}  # fmt: skip


def _stub_reply(request: dict) -> str:  # type: ignore[type-arg]
    said = message_text(request["messages"][-1].get("content")) if request.get("messages") else ""
    seen = describe_images(request)  # "I see an image of WxH." for each image in the turn
    return (
        f"{seen}You said: *{said}*\n\n(This is the demo's stand-in model, which only echoes. "
        "Set `OPENAI_API_KEY` before `make demo` to talk to a real one.)"
    )


def _port(workdir: Path, preferred: int) -> int:
    """The port this part used last time (bindings remember the issuer URL), else a free one."""
    saved = workdir / "demo-port"
    if saved.exists():
        return int(saved.read_text())
    port = preferred if _port_free(preferred) else free_port()
    saved.write_text(str(port))
    return port


STAFF_ALIAS = "demo-staff"


def _gated_room(synapse: SynapseServer, bot: dict[str, str]) -> str:
    """A room only the demo's moderators and admins belong in ([[access.rooms]]): made once, by
    the bot (so it has the power to invite and remove), and found by its alias after that."""
    alias = f"#{STAFF_ALIAS}:{synapse.server_name}"
    base = f"{synapse.base_url}/_matrix/client/v3"
    with httpx.Client(timeout=30) as http:
        if http.get(f"{base}/directory/room/{quote(alias)}").status_code == 200:
            return alias
        login = http.post(f"{base}/login", json={
            "type": "m.login.password", "password": bot["password"],
            "identifier": {"type": "m.id.user", "user": bot["user_id"]},
        })  # fmt: skip
        login.raise_for_status()
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        try:
            http.post(f"{base}/createRoom", headers=auth, json={
                "preset": "private_chat", "room_alias_name": STAFF_ALIAS,
                "name": "Demo staff (for the moderators and admins group)",
                "topic": "Who is here follows their SSO groups: see [[access.rooms]].",
            }).raise_for_status()  # fmt: skip
        finally:
            http.post(f"{base}/logout", headers=auth)  # this setup session's device goes
    return alias


DEMO_ACCOUNTS = {
    # The dev login page takes any username and password; these names carry groups.
    "demo-admin": {"name": "Demo Admin", "email": "admin@demo.test", "groups": ["admins"]},
    "demo-mod": {"name": "Demo Moderator", "email": "mod@demo.test", "groups": ["moderators"]},
}


async def main() -> int:
    DEMO.mkdir(exist_ok=True)
    workdirs = {name: DEMO / name for name in ("synapse", "oidc", "web")}
    for path in workdirs.values():
        path.mkdir(exist_ok=True)
    synapse = SynapseServer(
        workdirs["synapse"],
        port=_port(workdirs["synapse"], PREFERRED_PORT),
        relaxed_rate_limits=False,
    )
    web_port = _port(workdirs["web"], 8080)
    web_url = f"http://127.0.0.1:{web_port}"
    oidc = OidcProvider(
        workdirs["oidc"],
        port=_port(workdirs["oidc"], 8009),
        clients=[{
            "client_id": "community-bot-demo", "client_secret": OIDC_SECRET,
            "redirect_uris": [f"{web_url}/callback"],
        }],
        accounts=DEMO_ACCOUNTS,
    )  # fmt: skip
    print(
        f"starting Synapse on {synapse.base_url} and the OIDC provider on {oidc.issuer} …",
        flush=True,
    )
    await asyncio.to_thread(synapse.start)
    await asyncio.to_thread(oidc.start)
    real_llm = bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("CB_GPT_API_KEY"))
    stub = None
    if not real_llm:
        stub = LlmStub(port=8010 if _port_free(8010) else None, reply=_stub_reply)
        await stub.start()
    try:
        accounts = _accounts(synapse)
        demo, bot = accounts["demo"], accounts["bot"]
        staff_room = await asyncio.to_thread(_gated_room, synapse, bot)
        config_path = write_config(
            DEMO / "config.toml",
            {
                "matrix": {
                    "homeserver": synapse.base_url,
                    "user_id": bot["user_id"],
                    "password": bot["password"],
                    "device_name": "community-bot demo",
                    "autojoin_from": [synapse.server_name],
                },
                "data": {"dir": str(DEMO / "data")},
                "web": {"listen": f"127.0.0.1:{web_port}", "public_url": web_url},
                "roles": {"admins": [demo["user_id"]]},
                "sso": {
                    "providers": [
                        {
                            "id": "demo",
                            "name": "Demo SSO",
                            "issuer": oidc.issuer,
                            "client_id": "community-bot-demo",
                            "client_secret": OIDC_SECRET,
                            "scopes": ["openid", "profile", "email", "groups"],
                            "admin_groups": ["admins"],
                            "moderator_groups": ["moderators"],
                        }
                    ]
                },
                "access": {
                    "rooms": [{"room": staff_room, "groups": ["moderators", "admins"]}],
                },
                "logging": {"level": "info", "format": "console"},
                # With a real key (OPENAI_API_KEY / CB_GPT_API_KEY) the defaults reach OpenAI.
                **(
                    {"gpt": {"base_url": stub.base_url, "api_key": "demo", **DEMO_MEDIA}}
                    if stub
                    else {}
                ),
            },
        )
        async with httpx.AsyncClient() as http:
            (await http.get(f"{synapse.base_url}/health")).raise_for_status()
        gpt_line = (
            f"a stand-in model at {stub.base_url} (set OPENAI_API_KEY for a real one); "
            "link your account with !login first, then just talk in the DM; send it an image or "
            "a voice message, or try !image a lighthouse"
            if stub
            else "your endpoint and key from the environment; !login first, then just talk"
        )
        print(
            "\nThe demo is running. Log in with any Matrix client (Element desktop, nheko, …):\n"
            f"  homeserver: {synapse.base_url}\n"
            f"  user: {demo['user_id']}\n"
            f"  password: {demo['password']}\n"
            f"  bot: {bot['user_id']}\n"
            f"Start a direct chat with the bot and send !help, !ping or !login.\n"
            f"  sso: {oidc.issuer} takes any username and password at its login page;\n"
            f"       demo-admin is in group admins, demo-mod in moderators, others are members.\n"
            f"  rooms by group: sign in as demo-mod or demo-admin and the bot invites you to\n"
            f"       {staff_room}; `!resync` and `!access check` show how membership follows.\n"
            f"  gpt: {gpt_line}\n"
            f"Ctrl-C stops everything.\n"
            f"(config: {config_path}, state: {DEMO})\n",
            flush=True,
        )
        config = load_config(config_path)
        configure_logging(config.logging.level, config.logging.format)
        app = BotApp(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, app.stop)
        await app.run()
    finally:
        if stub is not None:
            await stub.stop()
        await asyncio.to_thread(oidc.stop)
        await asyncio.to_thread(synapse.stop)
        print("demo stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
