"""Member search (`MemberAdmin.search`, `!users`) on SQLite and on a real PostgreSQL: what matches,
paging by --page and by --after, the count; on PostgreSQL, that the trigram indexes serve it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import event, insert

import bot.community.members as members_module
from bot.commands.executor import CommandExecutor, Message
from bot.commands.members import registry as members_commands
from bot.commands.registry import merge
from bot.commands.services import LoginSettings, Services
from bot.community.audit import AuditLog
from bot.community.identity import IdentityService
from bot.community.login_links import LoginLinks
from bot.community.members import MemberAdmin
from bot.community.users import UserService
from bot.matrix.render import markdown_to_plain
from bot.store.models import Identity, User

ADMIN = "@root:x"


async def add_members(db, members: list[tuple[str, list[tuple[str | None, str | None]]]]) -> None:
    """(mxid, [(username, email) per SSO binding]) rows, straight into the store."""
    users = [{"mxid": mxid, "role": "user", "active": True} for mxid, _ in members]
    identities = [
        {"provider": f"p{n}", "issuer": f"https://sso{n}.example", "subject": f"{mxid}-{n}",
         "mxid": mxid, "username": username, "email": email, "groups": []}
        for mxid, bindings in members for n, (username, email) in enumerate(bindings)
    ]  # fmt: skip
    async with db.transaction() as session:
        for start in range(0, len(users), 2000):
            await session.execute(insert(User), users[start : start + 2000])
        for start in range(0, len(identities), 2000):
            await session.execute(insert(Identity), identities[start : start + 2000])


PEOPLE = [
    ("@alice:x", [("AliceW", "Alice@Mail.example")]),
    ("@bob:x", [("builder", "Bob.Smith@corp.example")]),
    ("@carol:x", []),
    ("@pct:x", [("100%_sure", "a_b@x.example")]),
    ("@axb:x", [("axb", "plain@x.example")]),
    ("@under_score:x", [("us", None)]),
    ("@slash:x", [("back\\slash", None)]),
    ("@two:x", [("first", "one@a.example"), ("second", "Zweite@b.example")]),
]


def mxids(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.mxid for r in page.rows]


@pytest.fixture
async def members(migrated_db):  # type: ignore[no-untyped-def]
    await add_members(migrated_db, PEOPLE)
    return MemberAdmin(migrated_db, [ADMIN], "@bot:x")


async def test_matches_mxid_username_and_email_case_insensitively(members):
    async def found(query: str) -> list[str]:
        return mxids(await members.search(query))

    assert await found("ALICE") == ["@alice:x"]  # MXID, username and email: listed once
    assert await found("mail.EXAMPLE") == ["@alice:x"]  # email only
    assert await found("smith") == ["@bob:x"]
    assert await found("BUILD") == ["@bob:x"]  # username only
    assert await found("carol") == ["@carol:x"]  # MXID only, no binding
    assert await found("zweite") == ["@two:x"]  # the second binding's email
    assert await found("nobody") == []
    # Short queries (no trigram) take the other path: same rules.
    assert await found("Bo") == ["@bob:x"]
    assert await found("oL") == ["@carol:x"]
    assert await found("Q") == []
    everyone = sorted(m for m, _ in PEOPLE)
    assert mxids(await members.search(None)) == everyone
    assert mxids(await members.search("")) == everyone


async def test_like_wildcards_and_backslashes_are_literal(members):
    async def found(query: str) -> list[str]:
        return mxids(await members.search(query))

    assert await found("%") == ["@pct:x"]
    assert await found("_") == ["@pct:x", "@under_score:x"]
    assert await found("%_s") == ["@pct:x"]
    assert await found("a_b") == ["@pct:x"]  # not @axb:x, which `a_b` as a pattern would match
    assert await found("a%b") == []
    assert await found("\\") == ["@slash:x"]
    assert await found("k\\s") == ["@slash:x"]
    assert await found("a\x00xb") == ["@axb:x"]  # NUL (PostgreSQL refuses it in text) is dropped


async def test_each_row_shows_the_binding_that_matched(members):
    [row] = (await members.search("zweite")).rows
    assert (row.username, row.email) == ("second", "Zweite@b.example")
    [row] = (await members.search("two")).rows  # the MXID matched: the first binding
    assert (row.username, row.email) == ("first", "one@a.example")
    [row] = (await members.search("carol")).rows
    assert (row.username, row.email, row.active) == (None, None, True)


@pytest.mark.parametrize("query", ["member", "m-", None])
async def test_pages_by_number_and_after_a_member(migrated_db, query):
    await add_members(
        migrated_db,
        [(f"@m-{n:02}:x", [(f"member{n}", f"m{n}@x.example")]) for n in range(45)]
        + [("@other:x", [("someone", "else@y.example")])],
    )
    admin = MemberAdmin(migrated_db, [], "@bot:x")
    expected = [f"@m-{n:02}:x" for n in range(45)]
    if query is None:
        expected.append("@other:x")  # "@o" sorts after "@m-"
    total = len(expected)

    first = await admin.search(query, 1, 20)
    assert (first.total, first.more, first.offset) == (total, False, 0)
    assert mxids(first) == expected[:20] and first.next_after == expected[19]

    second = await admin.search(query, 1, 20, after=first.next_after)
    assert mxids(second) == expected[20:40] and second.offset == 20
    assert second.total == total and second.next_after == expected[39]
    third = await admin.search(query, 1, 20, after=second.next_after)
    assert mxids(third) == expected[40:] and third.offset == 40 and third.next_after is None
    assert mxids(await admin.search(query, 3, 20)) == expected[40:]
    assert mxids(await admin.search(query, 2, 20)) == expected[20:40]

    beyond = await admin.search(query, 4, 20)
    assert beyond.rows == [] and beyond.total == total and beyond.next_after is None
    assert (await admin.search(query, 10**30, 20)).rows == []
    assert (await admin.search(query, 1, 20, after=expected[-1])).rows == []
    # After a member that does not match (or does not exist): the next ones in MXID order.
    between = await admin.search(query, 1, 20, after="@m-04zzz:x")
    assert mxids(between)[:2] == expected[expected.index("@m-05:x") :][:2]
    assert between.offset == expected.index("@m-05:x")


async def test_counts_exactly_up_to_the_limit_and_then_says_more(migrated_db, monkeypatch):
    monkeypatch.setattr(members_module, "COUNT_LIMIT", 30)
    await add_members(migrated_db, [(f"@m-{n:02}:x", [(f"member{n}", None)]) for n in range(45)])
    admin = MemberAdmin(migrated_db, [], "@bot:x")
    # 3+ characters are counted in the same pass as the page, exactly, however many match.
    page = await admin.search("member", 1, 20)
    assert (page.total, page.more, page.offset) == (45, False, 0)
    assert (await admin.search("member", 1, 20, after=page.next_after)).offset == 20
    for query in ("m-", None):  # the whole list and short queries: the count stops at the limit
        page = await admin.search(query, 1, 20)
        assert (page.total, page.more, page.offset) == (30, True, 0), query
        later = await admin.search(query, 1, 20, after=page.next_after)
        assert later.more and later.offset is None and len(later.rows) == 20
        assert later.next_after == "@m-39:x"
        assert mxids(await admin.search(query, 3, 20)) == [f"@m-{n}:x" for n in range(40, 45)]
    page = await admin.search("m-4", 1, 20)  # m-40 .. m-44
    assert (page.total, page.more) == (5, False)


# -- !users, through the command executor -----------------------------------------------------


@pytest.fixture
async def run_users(migrated_db):  # type: ignore[no-untyped-def]
    db = migrated_db
    services = Services(
        users=UserService(db, bootstrap_admins=[ADMIN]),
        audit=AuditLog(db),
        identity=IdentityService(db, [ADMIN]),
        login_links=LoginLinks(db, timedelta(minutes=10)),
        login=LoginSettings("http://127.0.0.1:8080", 10, {}),
        chat=None,  # type: ignore[arg-type]
        members=MemberAdmin(db, [ADMIN], "@bot:x"),
        moderation=None,  # type: ignore[arg-type]
        welcome=None,  # type: ignore[arg-type]
        announcements=None,  # type: ignore[arg-type]
        bot_user_id="@bot:x",
    )
    executor = CommandExecutor(
        merge(members_commands), services, prefix="!", admin_room_id="!admins:x"
    )

    async def run(line: str) -> str:
        message = Message(ADMIN, "!dm:x", "$e", is_direct=True, origin_server_ts=0)
        return markdown_to_plain((await executor.run(line, message)).markdown)  # the body

    return run


async def test_users_command_pages_with_next_after(migrated_db, run_users):
    await add_members(migrated_db, [(f"@m-{n:02}:x", [(f"member{n}", None)]) for n in range(45)])
    first = await run_users("users member")
    assert first.startswith("**45 members**, page 1 of 3:")
    assert "- @m-00:x — member0, user" in first
    assert first.endswith("Next: `!users member --after @m-19:x`")
    second = await run_users("users member --after @m-19:x")
    assert second.startswith("**45 members**, page 2 of 3:") and "@m-20:x" in second
    assert second.endswith("Next: `!users member --after @m-39:x`")
    last = await run_users("users member --after @m-39:x")
    assert last.startswith("**45 members**, page 3 of 3:") and "Next:" not in last
    assert (await run_users("users member --page 3")) == last
    assert (await run_users("users member --after @m-04:x")).startswith(
        "**45 members**, numbers 6 to 25:"
    )
    assert await run_users("users member --page 4") == "**45 members**, none on page 4 of 3."
    assert await run_users("users member --after @m-44:x") == "**45 members**, none after @m-44:x."
    assert (await run_users("users member --page 0")).startswith("⚠️ --page starts at 1.")
    assert (await run_users("users member --page 2 --after @m-19:x")).startswith(
        "⚠️ Give --page or --after, not both."
    )
    assert (await run_users("users member --after nobody")).startswith("⚠️")
    assert await run_users("users zyxwv") == "No member matches."
    one = await run_users("users m-07")
    assert one.startswith("**1 member**, page 1 of 1:") and "Next:" not in one


async def test_users_command_says_more_than_the_limit(migrated_db, run_users, monkeypatch):
    monkeypatch.setattr(members_module, "COUNT_LIMIT", 30)
    await add_members(migrated_db, [(f"@m-{n:02}:x", [(f"member{n}", None)]) for n in range(45)])
    assert (await run_users("users")).startswith("**more than 30 members**, page 1:")
    assert (await run_users("users m- --after @m-19:x")).startswith(
        "**more than 30 members**, after @m-19:x:"
    )
    assert (await run_users("users member")).startswith("**45 members**, page 1 of 3:")


# -- PostgreSQL: the trigram indexes serve the search -------------------------------------------


def _plan_nodes(plan: dict) -> list[dict]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
async def test_postgresql_search_uses_the_trigram_indexes(migrated_db, plan_cache_mode):
    """The statements search() runs, EXPLAINed with their own parameters on a few thousand members:
    bitmap scans on the three trigram indexes, no sequential scan of users or identities. Also
    with a generic plan, which PostgreSQL may switch to for a prepared statement (asyncpg)."""
    db = migrated_db
    await add_members(db, [
        (f"@member-{n}:example.org",
         [(f"{'otter' if n % 50 == 0 else 'heron'}_{n}", f"person.{n}@mail.example")])
        for n in range(5000)
    ])  # fmt: skip
    # As autovacuum does after such a load: a GIN index's own statistics, which the planner's
    # costing reads, are refreshed by VACUUM (or CREATE INDEX), not by ANALYZE.
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ANALYZE users")
        await conn.exec_driver_sql("VACUUM ANALYZE identities")
    admin = MemberAdmin(db, [], "@bot:x")
    statements: list[tuple[str, tuple]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "lower(" in statement:
            statements.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        page = await admin.search("OTTER", 1, 20)
        await admin.search("otter", 1, 20, after=page.next_after)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    assert page.total == 100 and len(page.rows) == 20
    assert len(statements) == 2  # the page and its count in one statement, twice

    for n, (statement, parameters) in enumerate(statements):
        async with db.engine.connect() as conn:
            await conn.exec_driver_sql(f"SET plan_cache_mode = {plan_cache_mode}")
            await conn.exec_driver_sql(f"PREPARE search_{n} AS {statement}")
            values = ", ".join(
                "'" + str(p).replace("'", "''") + "'" for p in parameters
            )  # fmt: skip
            result = await conn.exec_driver_sql(
                f"EXPLAIN (FORMAT JSON) EXECUTE search_{n}({values})"
                if parameters
                else f"EXPLAIN (FORMAT JSON) EXECUTE search_{n}"
            )
            raw = result.scalar()
            await conn.exec_driver_sql(f"DEALLOCATE search_{n}")
        [plan] = raw if isinstance(raw, list) else json.loads(raw)
        nodes = _plan_nodes(plan["Plan"])
        bitmap_indexes = {n["Index Name"] for n in nodes if n["Node Type"] == "Bitmap Index Scan"}
        assert bitmap_indexes >= {
            "ix_users_mxid_trgm", "ix_identities_username_trgm", "ix_identities_email_trgm"
        }, (statement, json.dumps(plan, indent=1))  # fmt: skip
        seq_scans = [n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"]
        assert not seq_scans, (statement, json.dumps(plan, indent=1))


async def test_revision_0007_goes_down_and_up_again(migrated_db):
    """The trigram indexes exist on PostgreSQL only, go with a downgrade and come back."""
    from alembic import command
    from sqlalchemy import inspect

    from bot.store.migrate import _alembic_config

    def trigram_indexes(connection) -> set[str]:  # type: ignore[no-untyped-def]
        names = set()
        for table in ("users", "identities"):
            names |= {i["name"] for i in inspect(connection).get_indexes(table)}
        return {n for n in names if n.endswith("_trgm")}

    def migrate(connection, target: str) -> set[str]:  # type: ignore[no-untyped-def]
        cfg = _alembic_config()
        cfg.attributes["connection"] = connection
        if target == "head":
            command.upgrade(cfg, target)
        else:
            command.downgrade(cfg, target)
        return trigram_indexes(connection)

    postgres = migrated_db.engine.dialect.name == "postgresql"
    expected = {"ix_users_mxid_trgm", "ix_identities_username_trgm", "ix_identities_email_trgm"}
    async with migrated_db.engine.begin() as conn:
        assert await conn.run_sync(trigram_indexes) == (expected if postgres else set())
        assert await conn.run_sync(migrate, "0006_hardening") == set()
        assert await conn.run_sync(migrate, "head") == (expected if postgres else set())
