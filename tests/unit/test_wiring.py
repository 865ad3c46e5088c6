"""The composition root's middle phase wires every part from the config without any I/O: it can be
checked without a homeserver, and what it builds is what the bot runs."""

from __future__ import annotations

from pathlib import Path

from nio import AsyncClient

from bot.app import Parts, Rooms, wire
from bot.config import load_config
from bot.store.database import Database

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


async def test_wire_builds_every_part_without_touching_the_network(tmp_path, monkeypatch):
    config = load_config(EXAMPLE, env={"CB_DATA_DIR": str(tmp_path / "data")})
    client = AsyncClient("http://127.0.0.1:9", config.matrix.user_id)

    async def no_network(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("wire() must not talk to the homeserver")

    monkeypatch.setattr(client, "send", no_network)
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    try:
        rooms = Rooms(admin_room_id="!admins:x", community_rooms=["!c:x"], welcome_rooms=["!w:x"])
        parts = wire(config, db, client, rooms, long_poll_ms=1000)
        assert isinstance(parts, Parts)
        assert parts.welcome.rooms == frozenset({"!w:x"})
        assert parts.chat.settings.max_tokens == config.gpt.max_tokens
        assert parts.chat.settings.model == config.gpt.model
        assert parts.moderation.actions.community_rooms() == []  # the client is in no room yet
        assert parts.dispatcher.member_joined == parts.courier.recipient_joined
    finally:
        await db.close()
        await client.close()
