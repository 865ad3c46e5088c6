"""Member search on PostgreSQL with 100,000 members: `!users <substring>` p95 against `!ping` p95 of
the same bot, interleaved in one run. Target (issue #10): at most 2.0, for a substring matching a
few members, one matching thousands and one matching none (three figures, each must hold).

The bot's store is a throwaway PostgreSQL server (tests/harness/postgres.py: initdb in a temporary
directory, fsync off), its schema made by `community-bot migrate`. 100,000 members are then
written straight into it through the bot's models (bot/store/models.py): a `users` row and an SSO
`identities` row each (username, email, display name), in bulk inserts, followed by ANALYZE (as
autovacuum would do shortly after such a load). The names are generated so that:

* ``quokka`` (a few) is in the username of 4 members,
* ``otter`` (thousands) is in the username of 2,000 members,
* ``zyxwv`` (none) is nowhere.

The bot runs as in production (`community-bot run`, a process of its own, encryption on);
Synapse on SQLite. The caller is one of the bot's admins ([roles] admins), in their DM with the
bot (`!users` answers only there or in the admin room). Each round sends `!ping` and the three
searches, one after another in a rotating order; a round trip runs from sending the command until
the reply to it is in the member's client.

Run alone: ``.venv/bin/python bench/member_search.py [--members N] [--rounds N]``."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Figure,
    Outcome,
    Target,
    bench_main,
    bot_process,
    close_all,
    community_bot_command,
    counted,
    log_in,
    open_dm,
    p50_p95,
    percentile,
    register,
    rounds_in_turn,
    run_benchmark,
    running_synapse,
    seconds,
    split,
)
from tests.harness.postgres import PostgresServer

NAME = "member search (PostgreSQL)"
MEMBERS = 100_000
ROUNDS = 30
WARM_UP = 3
TARGET = 2.0
CHUNK = 5_000
ANIMALS = (
    "otter", "badger", "heron", "lynx", "marten", "ibis", "bison", "gecko", "walrus", "finch",
    "beaver", "moose", "raven", "koala", "llama", "panda", "tapir", "zebra", "hyena", "camel",
    "dingo", "eland", "ferret", "gibbon", "jackal", "kudu", "lemur", "magpie", "narwhal", "ocelot",
    "pelican", "quail", "stoat", "toucan", "urchin", "vole", "weasel", "yak", "bongo", "crane",
    "dove", "egret", "falcon", "goose", "hare", "iguana", "jay", "kiwi", "loon", "mole",
)  # fmt: skip
ADJECTIVES = (
    "amber", "brisk", "calm", "dusty", "eager", "fuzzy", "gentle", "hazy", "icy", "jolly",
    "keen", "lucky", "mellow", "nimble", "odd", "plain", "quiet", "rapid", "shy", "tidy",
)  # fmt: skip
DOMAINS = ("mail.example", "post.example", "inbox.example", "web.example", "club.example")
RARE = "quokka"
QUERIES = {"few": RARE, "thousands": "otter", "none": "zyxwv"}
EXPECTED = {"few": 4, "thousands": 2_000, "none": 0}  # at 100,000 members


def member(n: int) -> tuple[dict[str, object], dict[str, object]]:
    """The `users` and `identities` rows of generated member number `n`."""
    animal = RARE if n % 25_000 == 17 else ANIMALS[n % len(ANIMALS)]
    adjective = ADJECTIVES[(n // len(ANIMALS)) % len(ADJECTIVES)]
    mxid = f"@member-{n}:localhost"
    user = {"mxid": mxid, "role": "user", "active": n % 97 != 0}
    identity = {
        "provider": "bench", "issuer": "https://sso.bench.example", "subject": f"subject-{n}",
        "mxid": mxid, "username": f"{adjective}_{animal}_{n}",
        "email": f"{adjective}.{n}@{DOMAINS[n % len(DOMAINS)]}",
        "display_name": f"{adjective.title()} {animal.title()} {n}", "groups": [],
    }  # fmt: skip
    return user, identity


async def generate(url: str, count: int) -> None:
    """`count` members, through the bot's models, in bulk inserts; then ANALYZE."""
    from sqlalchemy import insert, text

    from bot.store.database import Database
    from bot.store.models import Identity, User

    db = Database(url)
    try:
        for start in range(0, count, CHUNK):
            rows = [member(n) for n in range(start, min(count, start + CHUNK))]
            async with db.transaction() as session:
                await session.execute(insert(User), [u for u, _ in rows])
                await session.execute(insert(Identity), [i for _, i in rows])
        async with db.transaction() as session:
            await session.execute(text("ANALYZE"))
    finally:
        await db.close()


def _matches(body: str) -> int | None:
    """How many members the bot's answer to `!users` says matched."""
    if body.startswith("No member matches"):
        return 0
    found = re.search(r"(\d[\d,]*) members?\b", body)
    return int(found.group(1).replace(",", "")) if found else None


async def measure(workdir: Path, members_count: int, rounds: int) -> Outcome:
    postgres = PostgresServer(workdir / "pg")
    try:
        await asyncio.to_thread(postgres.start)
        url = await asyncio.to_thread(postgres.create_database, "bot")
        async with running_synapse(workdir) as synapse:
            bot = None
            clients = []
            try:
                bot_account, admin_account = await register(synapse, "q", 2)
                bot = bot_process(synapse, bot_account, workdir, admins=[admin_account.user_id],
                                  database_url=url)  # fmt: skip
                started = time.monotonic()
                migrate = await asyncio.to_thread(
                    subprocess.run,
                    [*community_bot_command(), "migrate", "--config", str(bot.config_path)],
                    capture_output=True, text=True, timeout=120, check=False,
                )  # fmt: skip
                if migrate.returncode != 0:
                    raise RuntimeError(f"community-bot migrate failed: {migrate.stderr[-2000:]}")
                migrate_s = time.monotonic() - started
                started = time.monotonic()
                await generate(url, members_count)
                generate_s = time.monotonic() - started
                await bot.start()
                clients = await log_in(synapse, [admin_account])
                admin = clients[0]
                room = await open_dm(admin, bot.user_id)
                commands = {"ping": "!ping", **{k: f"!users {q}" for k, q in QUERIES.items()}}
                targets = {key: Target(room, bot.user_id, body) for key, body in commands.items()}
                trips = (await rounds_in_turn(admin, targets, rounds, warm_up=WARM_UP)).trips
                problems = bot.problems()
            finally:
                await close_all(clients, bot)
    finally:
        await asyncio.to_thread(postgres.stop)

    times = {key: [t.total for t in ts] for key, ts in trips.items()}
    ping95 = percentile(times["ping"], 95)
    ratios = {key: percentile(times[key], 95) / ping95 for key in QUERIES}
    found = {key: {_matches(t.body) for t in trips[key]} for key in QUERIES}
    expected_ok = members_count != MEMBERS or all(found[k] == {EXPECTED[k]} for k in QUERIES)
    pongs = all(t.body.startswith("Pong!") for t in trips["ping"])

    def figure(key: str) -> str:
        return f"!users p95 / !ping p95, {key} ({QUERIES[key]})"

    details = [
        ("members generated", f"{members_count:,} users + identities rows"),
        ("community-bot migrate", seconds(migrate_s)),
        ("bulk insert + ANALYZE", seconds(generate_s)),
        ("rounds", f"{rounds}, one of each command per round, order rotating"),
        ("!ping p50 / p95", p50_p95(times["ping"])),
    ]
    for key, query in QUERIES.items():
        details += [
            (f"!users {query} p50 / p95", p50_p95(times[key])),
            ("  matches (bot's answer)", ", ".join(str(n) for n in sorted(found[key], key=str))),
            ("  ratio p95 / ping p95", f"{ratios[key]:.3f}"),
            ("  split p50", split(trips[key])),
        ]  # fmt: skip
    details += [
        ("!ping split p50", split(trips["ping"])),
        ("bot log lines at warning and above", counted(problems.most_common(5))),
    ]
    return Outcome(
        NAME, figure("few"), ratios["few"], TARGET,
        figures=[Figure(figure(k), ratios[k], TARGET) for k in ("thousands", "none")],
        details=details,
        notes=[
            "round trip = the admin sends the command in their DM until the reply to it is in "
            "their client; !users answers with the count and the first page of 20",
            "the bot's store on PostgreSQL (test server: fsync off), Synapse on SQLite",
        ],
        extra_checks=[
            ("every !ping answered with a pong", pongs),
            ("!users found what was generated", expected_ok),
        ],
    )  # fmt: skip


def run(members: int = MEMBERS, rounds: int = ROUNDS) -> Outcome:
    failed = Outcome(NAME, "!users p95 / !ping p95, few", None, TARGET)
    return run_benchmark(
        measure, members, rounds, prefix="bench-search-", timeout=900, failed=failed
    )


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, argv, members=MEMBERS, rounds=ROUNDS)


if __name__ == "__main__":
    sys.exit(main())
