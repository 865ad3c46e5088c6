import pytest

from bot.commands.catalog import all_commands
from bot.commands.general import command_details, command_list
from bot.commands.registry import (
    Arg,
    Flag,
    Kind,
    Registry,
    UsageError,
    merge,
    parse_arguments,
)
from bot.community.roles import Role


async def _noop(ctx, args):  # pragma: no cover - never called
    raise AssertionError


def _registry() -> Registry:
    r = Registry()
    r.command("ping", help="Ping.")(_noop)
    r.command(
        "kick",
        help="Kick.",
        role=Role.MODERATOR,
        args=[Arg("user", Kind.USER), Arg("reason", Kind.TEXT, required=False)],
        flags=[Flag("room", Kind.ROOM), Flag("all")],
    )(_noop)
    r.command(
        "role",
        help="Set a role.",
        role=Role.ADMIN,
        args=[
            Arg("user", Kind.USER),
            Arg("role", Kind.CHOICE, choices=("user", "moderator", "admin")),
        ],
    )(_noop)
    r.command(
        "audit",
        help="Audit.",
        role=Role.ADMIN,
        args=[Arg("n", Kind.INT, required=False)],
        aliases=("log",),
    )(_noop)
    return r


def test_duplicate_names_are_refused():
    r = _registry()
    with pytest.raises(ValueError, match="declared twice"):
        r.command("log", help="x")(_noop)


def test_resolve_by_alias_and_case():
    r = _registry()
    assert r.resolve("LOG").name == "audit"
    assert r.resolve("nope") is None


def test_visible_commands_depend_on_role():
    r = _registry()
    assert [c.name for c in r.visible_to(Role.USER)] == ["ping"]
    assert [c.name for c in r.visible_to(Role.MODERATOR)] == ["ping", "kick"]
    assert len(r.visible_to(Role.ADMIN)) == 4


def test_suggestion_only_among_commands_the_caller_may_run():
    r = _registry()
    assert r.suggest("pnig", Role.USER) == "ping"
    assert r.suggest("kik", Role.USER) is None
    assert r.suggest("kik", Role.MODERATOR) == "kick"


def test_usage_line_is_derived_from_the_declaration():
    r = _registry()
    assert r.resolve("kick").usage("!") == "!kick <@user> [reason…] [--room <#room|!id>] [--all]"
    assert r.resolve("role").usage("!") == "!role <@user> <user|moderator|admin>"


def test_parse_user_room_text_and_flags_anywhere():
    kick = _registry().resolve("kick")
    args = parse_arguments(kick, "@bob:example.org --room #general:example.org being rude\n  twice")
    assert args == {
        "user": "@bob:example.org",
        "room": "#general:example.org",
        "all": False,
        "reason": "being rude\n  twice",
    }
    args = parse_arguments(kick, "@bob:example.org spam --all")
    assert args.reason == "spam" and args.all is True
    assert parse_arguments(kick, "@bob:example.org").reason is None


def test_parse_mention_pill_as_user():
    kick = _registry().resolve("kick")
    assert parse_arguments(kick, "https://matrix.to/#/@bob:example.org").user == "@bob:example.org"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("kick", "", "missing user"),
        ("kick", "bob", "not a Matrix user ID"),
        ("kick", "@bob:example.org --room general", "not a room ID or alias"),
        ("kick", "@bob:example.org --room", "--room needs a value"),
        ("role", "@bob:example.org king", "must be one of user, moderator, admin"),
        ("role", "@bob:example.org admin extra", "unexpected 'extra'"),
        ("audit", "ten", "must be a whole number"),
        ("audit", "--verbose", "unknown option --verbose"),
    ],
)
def test_bad_arguments_say_what_is_wrong(name, text, message):
    with pytest.raises(UsageError, match=message):
        parse_arguments(_registry().resolve(name), text)


def test_choice_is_case_insensitive_and_quotes_group_words():
    r = _registry()
    assert parse_arguments(r.resolve("role"), "@a:b ADMIN").role == "admin"
    kick = r.resolve("kick")
    assert parse_arguments(kick, '"@a:b" "quoted reason"').reason == '"quoted reason"'


def test_help_text_lists_by_area_and_details_show_role():
    r = _registry()
    listing = command_list(r.visible_to(Role.MODERATOR), "!", r.areas())
    assert "`!kick <@user> [reason…] [--room <#room|!id>] [--all]` — Kick." in listing
    assert "!role" not in listing
    details = command_details(r.resolve("audit"), "!")
    assert "Needs role: admin." in details and "Also: `!log`" in details


def test_merge_keeps_every_command():
    other = Registry()
    other.command("extra", help="Extra.")(_noop)
    combined = merge(_registry(), other)
    assert set(combined.commands) == {"ping", "kick", "role", "audit", "extra"}
    assert combined.resolve("log").name == "audit"


def test_merge_clash():
    with pytest.raises(ValueError):
        merge(_registry(), all_commands())  # both declare ping


def test_admin_commands_are_confined_to_the_admin_room_by_default():
    r = _registry()
    assert r.resolve("role").confined_to_admin_room
    assert not r.resolve("kick").confined_to_admin_room


def test_room_ids_of_room_version_12_have_no_server_part():
    from bot.commands.registry import parse_room

    assert (
        parse_room("!Uvsp95mW68QfR7IjkAtbu3kv4pUpVQAbKogFxOAnUjY")
        == "!Uvsp95mW68QfR7IjkAtbu3kv4pUpVQAbKogFxOAnUjY"
    )
    assert parse_room("!old:example.org") == "!old:example.org"
    assert parse_room("#general:example.org") == "#general:example.org"
    with pytest.raises(UsageError):
        parse_room("#no-server")


def test_welcome_templates_allow_only_plain_placeholders():
    from bot.community.welcome import template_problem

    assert template_problem("Welcome {mention} to {room}! {login_hint}") is None
    assert template_problem("{name:>999999999}") is not None
    assert template_problem("{name!r}") is not None
    assert template_problem("{nickname}") is not None
    assert template_problem("{") is not None
