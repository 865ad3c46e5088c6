"""Invite tokens without a homeserver: the domain (bot/community/invite_tokens.py) over a fake
RegistrationTokens port and the real store (SQLite), the commands through the executor, and the
Synapse admin client's reading of answers and failures."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.commands.executor import CommandExecutor, Message
from bot.commands.onboarding import NOT_CONFIGURED, PRIVATE_ONLY
from bot.commands.onboarding import registry as onboarding
from bot.commands.registry import merge
from bot.commands.services import LoginSettings, Services
from bot.community.audit import AuditLog
from bot.community.identity import IdentityService
from bot.community.invite_tokens import (
    REGISTRATION_CLOSED,
    REGISTRATION_OPEN,
    InviteTokenError,
    InviteTokens,
    RegistrationMode,
    RegistrationNotByToken,
    RegistrationToken,
    TokenUnknown,
)
from bot.community.login_links import LoginLinks
from bot.community.users import UserService
from bot.matrix.synapse_admin import (
    HomeserverUnreachable,
    SynapseAdmin,
    parse_token,
)
from bot.store.database import Database
from bot.store.migrate import upgrade_to_head
from bot.store.models import AuditEntry, InviteToken, User

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class FakeHomeserver:
    """The RegistrationTokens port, in memory; records what it was asked."""

    def __init__(self, mode: RegistrationMode = RegistrationMode.TOKEN) -> None:
        self.mode = mode
        self.tokens: dict[str, RegistrationToken] = {}
        self.calls: list[str] = []
        self.next_tokens = (f"tok{n:04d}" for n in itertools.count(1))

    def add(self, token: str, **fields: object) -> None:
        values = {"uses_allowed": None, "pending": 0, "completed": 0, "expires_at": None}
        values.update(fields)
        self.tokens[token] = RegistrationToken(token=token, **values)  # type: ignore[arg-type]

    async def create(self, *, uses_allowed, expires_at):  # type: ignore[no-untyped-def]
        self.calls.append("create")
        token = next(self.next_tokens)
        self.add(token, uses_allowed=uses_allowed, expires_at=expires_at)
        return self.tokens[token]

    async def list(self):  # type: ignore[no-untyped-def]
        self.calls.append("list")
        return list(self.tokens.values())

    async def get(self, token):  # type: ignore[no-untyped-def]
        self.calls.append("get")
        return self.tokens.get(token)

    async def delete(self, token):  # type: ignore[no-untyped-def]
        self.calls.append("delete")
        return self.tokens.pop(token, None) is not None

    async def registration_mode(self):  # type: ignore[no-untyped-def]
        self.calls.append("registration_mode")
        return self.mode


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    await upgrade_to_head(database)
    yield database
    await database.close()


@pytest.fixture
def homeserver() -> FakeHomeserver:
    return FakeHomeserver()


@pytest.fixture
def service(db, homeserver) -> InviteTokens:
    return InviteTokens(db, homeserver, clock=lambda: NOW)


async def audit_entries(db: Database) -> list[AuditEntry]:
    async with db.transaction() as session:
        return list(await session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


# -- the domain -----------------------------------------------------------------------------------


async def test_create_records_the_maker_and_audits(service, homeserver, db):
    made = await service.create("@mod:x", 3, timedelta(days=2), room_id="!dm:x")
    assert made.token == "tok0001" and made.created_by == "@mod:x" and made.uses_left == 3
    assert homeserver.tokens["tok0001"].expires_at == NOW + timedelta(days=2)
    assert homeserver.calls == ["registration_mode", "create"]
    async with db.transaction() as session:
        row = await session.get(InviteToken, "tok0001")
    assert (row.created_by, row.uses_allowed, row.expires_at) == (
        "@mod:x", 3, NOW + timedelta(days=2)
    )  # fmt: skip
    [entry] = await audit_entries(db)
    assert (entry.actor, entry.action, entry.room_id) == ("@mod:x", "invite_token.create", "!dm:x")
    assert entry.target == "tok0…" and "tok0001" not in str(entry.detail)
    assert entry.detail == {"uses_allowed": 3, "expires_at": (NOW + timedelta(days=2)).isoformat()}


async def test_create_defaults_to_one_use_for_a_week(service, homeserver):
    made = await service.create("@mod:x")
    assert made.uses_allowed == 1 and made.expires_at == NOW + timedelta(days=7)


@pytest.mark.parametrize(
    ("uses", "lifetime", "says"),
    [
        (0, timedelta(days=1), "--uses must be from 1 to 1,000, not 0."),
        (1001, timedelta(days=1), "--uses must be from 1 to 1,000, not 1,001."),
        (1, timedelta(seconds=30), "--expires must be from 1m to 365d, not 30s."),
        (1, timedelta(days=400), "--expires must be from 1m to 365d, not 400d."),
    ],
)
async def test_out_of_range_requests_reach_no_homeserver(service, homeserver, uses, lifetime, says):
    with pytest.raises(InviteTokenError) as refused:
        await service.create("@mod:x", uses, lifetime)
    assert str(refused.value) == says
    assert homeserver.calls == []


@pytest.mark.parametrize(
    ("mode", "says"),
    [(RegistrationMode.CLOSED, REGISTRATION_CLOSED), (RegistrationMode.OPEN, REGISTRATION_OPEN)],
)
async def test_no_token_where_registration_does_not_ask_for_one(service, homeserver, mode, says):
    homeserver.mode = mode
    with pytest.raises(RegistrationNotByToken) as refused:
        await service.create("@mod:x")
    assert str(refused.value) == says
    assert homeserver.calls == ["registration_mode"] and not homeserver.tokens


async def test_unknown_registration_mode_does_not_stop_a_token(service, homeserver):
    homeserver.mode = RegistrationMode.UNKNOWN
    assert (await service.create("@mod:x")).token == "tok0001"


async def test_a_token_that_cannot_be_recorded_is_taken_back(service, homeserver, db):
    async with db.transaction() as session:  # the same token already recorded: the insert fails
        session.add(InviteToken(token="tok0001", created_by="@someone:x"))
    with pytest.raises(Exception):  # noqa: B017 (the store's own error)
        await service.create("@mod:x")
    assert homeserver.tokens == {} and homeserver.calls[-1] == "delete"
    assert await audit_entries(db) == []


async def test_list_merges_the_homeservers_numbers_with_who_made_them(service, homeserver):
    mine = await service.create("@mod:x", 2, timedelta(days=1))
    homeserver.add("foreign", uses_allowed=None, completed=4)
    homeserver.add("spent", uses_allowed=1, completed=1, expires_at=NOW + timedelta(hours=1))
    homeserver.add("old", uses_allowed=5, completed=1, expires_at=NOW - timedelta(hours=1))
    homeserver.add("soon", uses_allowed=2, pending=1, expires_at=NOW + timedelta(hours=1))
    listed = {t.token: t for t in await service.list()}
    assert listed[mine.token].created_by == "@mod:x" and listed[mine.token].uses_left == 2
    assert listed["foreign"].created_by is None and listed["foreign"].uses_left is None
    assert listed["spent"].used_up and not listed["spent"].usable(NOW)
    assert listed["old"].expired(NOW) and listed["old"].uses_left == 4
    assert listed["soon"].uses_left == 1  # a registration under way holds its use
    # Usable first, soonest to expire first; then the spent and expired ones.
    assert [t.token for t in await service.list()][:3] == ["soon", mine.token, "foreign"]
    assert {t.token for t in (await service.list())[3:]} == {"spent", "old"}


async def test_revoke_deletes_at_the_homeserver_marks_and_audits(service, homeserver, db):
    made = await service.create("@mod:x")
    homeserver.add(made.token, uses_allowed=1, completed=1)
    gone = await service.revoke("@other:x", made.token, room_id="!room:x")
    assert gone.created_by == "@mod:x" and gone.completed == 1
    assert made.token not in homeserver.tokens
    async with db.transaction() as session:
        row = await session.get(InviteToken, made.token)
    assert (row.revoked_by, row.revoked_at) == ("@other:x", NOW)
    entry = (await audit_entries(db))[-1]
    assert (entry.actor, entry.action, entry.target) == ("@other:x", "invite_token.revoke", "tok0…")
    assert entry.detail == {"made_by": "@mod:x", "completed": 1}


async def test_revoke_a_token_made_elsewhere(service, homeserver, db):
    homeserver.add("foreign")
    gone = await service.revoke("@mod:x", "foreign")
    assert gone.created_by is None and "foreign" not in homeserver.tokens
    assert (await audit_entries(db))[-1].detail == {"made_by": None, "completed": 0}


@pytest.mark.parametrize("token", ["nosuch", "../../users/@admin:x", "a" * 65, "tok en"])
async def test_revoke_unknown_or_malformed(service, homeserver, db, token):
    with pytest.raises(TokenUnknown):
        await service.revoke("@mod:x", token)
    if token != "nosuch":  # member text that is not a token never reaches the homeserver
        assert homeserver.calls == []
    assert await audit_entries(db) == []


# -- the commands ---------------------------------------------------------------------------------

ADMIN_ROOM = "!admins:x"


@pytest.fixture
async def run(db, service):
    async with db.transaction() as session:
        session.add(User(mxid="@mod:x", role="moderator", active=True))

    def executor(invite_tokens: InviteTokens | None) -> CommandExecutor:
        services = Services(
            users=UserService(db, bootstrap_admins=["@root:x"]), audit=AuditLog(db),
            identity=IdentityService(db, ["@root:x"]),
            login_links=LoginLinks(db, timedelta(minutes=10)),
            login=LoginSettings("http://127.0.0.1:8080", 10, {}),
            chat=None, members=None, moderation=None, welcome=None,  # type: ignore[arg-type]
            announcements=None, bot_user_id="@bot:x",  # type: ignore[arg-type]
            invite_tokens=invite_tokens,
        )  # fmt: skip
        return CommandExecutor(merge(onboarding), services, prefix="!", admin_room_id=ADMIN_ROOM)

    async def run(text: str, *, sender="@mod:x", room="!dm:x", direct=True, configured=True):  # type: ignore[no-untyped-def]
        message = Message(sender=sender, room_id=room, event_id="$e", is_direct=direct,
                          origin_server_ts=0)  # fmt: skip
        reply = await executor(service if configured else None).run(text, message)
        return reply.markdown

    return run


async def test_commands_make_list_and_revoke_in_a_dm(run, homeserver):
    made = await run("invite-token --uses 2 --expires 36h")
    assert made.startswith("Invite token: `tok0001`\n\nIt lets 2 newcomers sign up")
    assert "until 2026-12-03 00:00 UTC" in made and "`!invite-token revoke tok0001`" in made
    listed = await run("invite-tokens")
    assert listed == (
        "**1 invite token**, 1 usable:\n\n"
        "- `tok0001` — 2 of 2 uses left, expires 2026-12-03 00:00 UTC; made by \\@mod\\:x"
    )
    homeserver.add("tok0001", uses_allowed=2, completed=2)
    homeserver.add("other", pending=1)
    listed = await run("invite-tokens", room=ADMIN_ROOM, direct=False)
    assert "- `tok0001` — **used up** (2 of 2); made by \\@mod\\:x" in listed
    assert (
        "- `other` — no limit on uses (0 so far), expires never, 1 registration under way; "
        "not made by me (maker unknown)" in listed
    )
    revoked = await run("invite-token revoke tok0001")
    assert (
        revoked == "Revoked: no one can sign up with that token any more (2 accounts made with it)."
    )
    assert (await run("invite-token REVOKE tok0001")).startswith("⚠️ The homeserver has no such")


async def test_tokens_are_never_shown_in_a_group_room(run, homeserver):
    for command in ("invite-token", "invite-token --uses 3", "invite-tokens"):
        assert await run(command, room="!group:x", direct=False) == f"⚠️ {PRIVATE_ONLY}"
    assert homeserver.calls == []
    # Revoking works there (and does not repeat the token).
    homeserver.add("leaked")
    revoked = await run("invite-token revoke leaked", room="!group:x", direct=False)
    assert revoked.startswith("Revoked:") and "leaked" not in revoked


async def test_command_mistakes_and_roles(run, homeserver):
    usage = "Usage: `!invite-token [revoke <token>] [--uses <uses>] [--expires <expires>]`"
    assert await run("invite-token --expires soon") == (
        "⚠️ --expires takes a duration like 12h, 7d or 2w, not 'soon'."
    )
    assert await run("invite-token --uses many") == (
        f"⚠️ --uses must be a whole number, not 'many'. {usage}"
    )
    assert await run("invite-token revoke") == f"⚠️ say which token to revoke. {usage}"
    assert await run("invite-token tok0001") == f"⚠️ unexpected 'tok0001'. {usage}"
    assert await run("invite-token revoke tok0001 --uses 2") == (
        "⚠️ --uses and --expires are for making a token, not for revoking one. "
        "Usage: `!invite-token revoke <token>`"
    )
    assert (await run("invite-token --uses 0")).startswith("⚠️ --uses must be from 1 to 1,000")
    for command in ("invite-token", "invite-tokens", "invite-token revoke tok0001"):
        assert (await run(command, sender="@member:x")).startswith(
            f"⚠️ I don't know the command `!{command.split()[0]}`"
        )
    assert homeserver.calls == []


async def test_commands_say_what_to_configure(run):
    for command in ("invite-token", "invite-tokens", "invite-token revoke abc"):
        assert await run(command, configured=False) == f"⚠️ {NOT_CONFIGURED}"
    assert "`[synapse] admin_token`" in NOT_CONFIGURED


# -- the Synapse admin client ---------------------------------------------------------------------


def test_token_objects_are_checked():
    token = parse_token(
        {"token": "abc", "uses_allowed": 1, "pending": 0, "completed": 1, "expiry_time": 1_000}
    )
    assert token == RegistrationToken("abc", 1, 0, 1, datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))
    assert (
        parse_token({"token": "x", "uses_allowed": None, "expiry_time": None}).uses_allowed is None
    )
    for bad in (
        {"token": "a/b"},
        {"token": "abc", "uses_allowed": -1},
        {"token": "abc", "pending": True},
        {"token": "abc", "expiry_time": "soon"},
        ["abc"],
    ):
        with pytest.raises(ValueError):
            parse_token(bad)


async def test_an_unreachable_homeserver_is_said_plainly():
    from tests.harness.synapse import free_port

    admin = SynapseAdmin(f"http://127.0.0.1:{free_port()}", "secret-token", timeout_s=2)
    with pytest.raises(HomeserverUnreachable) as problem:
        await admin.list()
    assert str(problem.value) == "The homeserver did not answer; try again in a moment."
    assert await admin.registration_mode() is RegistrationMode.UNKNOWN
    with pytest.raises(ValueError):
        await admin.get("../users")
