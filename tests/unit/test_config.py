"""Unit tests for bot.config: TOML + CB_* environment settings loader."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from bot.config import (
    Config,
    ConfigError,
    DataSettings,
    LoggingSettings,
    MatrixSettings,
    ProviderSettings,
    _coerce,
    load_config,
    redacted_dict,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "config.example.toml"

MATRIX = """\
[matrix]
homeserver = "https://matrix.example.org"
user_id = "@bot:example.org"
password = "hunter2-secret"
"""

# Enough environment for load_config(None, ...) to succeed.
MIN_ENV = {
    "CB_MATRIX_HOMESERVER": "https://matrix.example.org",
    "CB_MATRIX_USER_ID": "@bot:example.org",
    "CB_MATRIX_ACCESS_TOKEN": "syt_very_secret_token",
}


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env)
    return info.value.problems


# --------------------------------------------------------------------------- example, defaults


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.matrix.homeserver == "http://127.0.0.1:8008"
    assert config.matrix.user_id == "@bot:localhost"
    assert config.matrix.password is not None
    assert config.matrix.password.get_secret_value() == "change-me"
    assert config.source_path == EXAMPLE
    assert config.data.dir == REPO_ROOT / "data"


def test_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    config = load_config(EXAMPLE, env={})
    for section, values in redacted_dict(config).items():
        if section == "source_path":
            continue
        assert f"[{section}]" in text
        for key in values:
            if (section, key) == ("sso", "providers"):
                assert "[[sso.providers]]" in text
                continue
            assert f"{key} =" in text, f"{section}.{key} not documented"
    for key in ProviderSettings.model_fields:
        assert f"# {key} =" in text, f"sso.providers.{key} not documented"
    for secret in ("password", "access_token", "session_secret", "client_secret"):
        assert f"{secret}_file =" in text
    assert "CB_" in text


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MATRIX), env={})
    m = config.matrix
    assert m.homeserver == "https://matrix.example.org"
    assert m.user_id == "@bot:example.org"
    assert m.access_token is None
    assert m.device_name == "community-bot"
    assert m.command_prefix == "!"
    assert m.encryption is True
    assert m.admin_room is None
    assert m.autojoin_from == ()
    assert config.data.dir == tmp_path / "data"
    assert config.data.dir.is_absolute()
    assert config.database.url == f"sqlite+aiosqlite:///{tmp_path}/data/bot.db"
    assert config.web.listen == "127.0.0.1:8080"
    assert (config.web.listen_host, config.web.listen_port) == ("127.0.0.1", 8080)
    assert config.web.public_url == "http://127.0.0.1:8080"
    assert config.web.session_secret is None
    assert config.roles.admins == ()
    assert config.logging.level == "info"
    assert config.logging.format == "console"
    assert config.source_path == tmp_path / "config.toml"


def test_env_only_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env=MIN_ENV)
    assert config.source_path is None
    assert config.matrix.password is None
    assert config.matrix.access_token is not None
    assert config.matrix.access_token.get_secret_value() == "syt_very_secret_token"
    assert config.data.dir == tmp_path / "data"


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_MATRIX_DEVICE_NAME", "from-os-environ")
    config = load_config(write(tmp_path, MATRIX))
    assert config.matrix.device_name == "from-os-environ"


def test_access_token_alone_is_enough(tmp_path: Path) -> None:
    text = MATRIX.replace('password = "hunter2-secret"', 'access_token = "syt_abc"')
    config = load_config(write(tmp_path, text), env={})
    assert config.matrix.password is None
    assert config.matrix.access_token == SecretStr("syt_abc")


def test_full_file(tmp_path: Path) -> None:
    text = (
        MATRIX
        + """\
device_name = "dev"
command_prefix = "?!"
encryption = false
admin_room = "!abcdef:example.org"
autojoin_from = ["@alice:example.org", "friends.example.net", "localhost:8448"]

[data]
dir = "/var/lib/bot"

[database]
url = "postgresql+asyncpg://bot:dbpass@db/bot"

[web]
listen = "[::1]:9000"
public_url = "https://bot.example.org/"
session_secret = "sess-0123456789abcdef0123456789abcdef"

[roles]
admins = ["@admin:example.org"]

[logging]
level = "DEBUG"
format = "Json"
"""
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.matrix.device_name == "dev"
    assert config.matrix.command_prefix == "?!"
    assert config.matrix.encryption is False
    assert config.matrix.admin_room == "!abcdef:example.org"
    assert config.matrix.autojoin_from == (
        "@alice:example.org",
        "friends.example.net",
        "localhost:8448",
    )
    assert config.data.dir == Path("/var/lib/bot")
    assert config.database.url == "postgresql+asyncpg://bot:dbpass@db/bot"
    assert (config.web.listen_host, config.web.listen_port) == ("::1", 9000)
    assert config.web.public_url == "https://bot.example.org"
    assert config.web.session_secret == SecretStr("sess-0123456789abcdef0123456789abcdef")
    assert config.roles.admins == ("@admin:example.org",)
    assert config.logging.level == "debug"
    assert config.logging.format == "json"


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MATRIX), env={})
    with pytest.raises(ValidationError):
        config.matrix.device_name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.matrix = config.matrix  # type: ignore[misc]


# --------------------------------------------------------------------------- environment


def test_env_overrides_string_and_wins_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, MATRIX + 'device_name = "from-file"\n')
    config = load_config(path, env={"CB_MATRIX_DEVICE_NAME": "from-env"})
    assert config.matrix.device_name == "from-env"


def test_env_overrides_secret(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MATRIX), env={"CB_MATRIX_PASSWORD": "env-pass"})
    assert config.matrix.password == SecretStr("env-pass")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("YES", True),
        ("false", False),
        ("0", False),
        ("no", False),
        (" No ", False),
    ],
)
def test_env_bool(tmp_path: Path, raw: str, expected: bool) -> None:
    config = load_config(write(tmp_path, MATRIX), env={"CB_MATRIX_ENCRYPTION": raw})
    assert config.matrix.encryption is expected


def test_env_bool_invalid_names_key_and_variable(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, MATRIX), {"CB_MATRIX_ENCRYPTION": "maybe"})
    assert problems == [
        'matrix.encryption: expected true or false, got "maybe" (from CB_MATRIX_ENCRYPTION)'
    ]


def test_env_list_json(tmp_path: Path) -> None:
    env = {"CB_ROLES_ADMINS": '["@a:example.org", "@b:example.org"]'}
    config = load_config(write(tmp_path, MATRIX), env=env)
    assert config.roles.admins == ("@a:example.org", "@b:example.org")


def test_env_list_csv(tmp_path: Path) -> None:
    env = {"CB_MATRIX_AUTOJOIN_FROM": "@a:example.org, example.net ,"}
    config = load_config(write(tmp_path, MATRIX), env=env)
    assert config.matrix.autojoin_from == ("@a:example.org", "example.net")


def test_env_list_empty_clears_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, MATRIX + '[roles]\nadmins = ["@a:example.org"]\n')
    assert load_config(path, env={"CB_ROLES_ADMINS": ""}).roles.admins == ()


@pytest.mark.parametrize("raw", ['["@a:example.org"', "[1, 2]", '{"a": 1}'])
def test_env_list_invalid(tmp_path: Path, raw: str) -> None:
    problems = problems_of(write(tmp_path, MATRIX), {"CB_ROLES_ADMINS": raw})
    assert len(problems) == 1
    assert problems[0].startswith("roles.admins: expected ")
    assert problems[0].endswith("(from CB_ROLES_ADMINS)")


def test_env_empty_value_means_not_set(tmp_path: Path) -> None:
    path = write(tmp_path, MATRIX + 'device_name = "from-file"\n')
    env = {"CB_MATRIX_DEVICE_NAME": "", "CB_MATRIX_ADMIN_ROOM": "", "CB_MATRIX_PASSWORD": ""}
    config = load_config(path, env=env)
    assert config.matrix.device_name == "from-file"
    assert config.matrix.admin_room is None
    assert config.matrix.password == SecretStr("hunter2-secret")


def test_env_int_and_float_coercion() -> None:
    # No section has numeric keys yet; the coercion used for future ones.
    assert _coerce("int", "42", True, Path()) == 42
    assert _coerce("int", 7, False, Path()) == 7
    assert _coerce("float", "0.5", True, Path()) == 0.5
    with pytest.raises(Exception, match="expected an integer"):
        _coerce("int", "forty-two", True, Path())
    with pytest.raises(Exception, match="expected an integer"):
        _coerce("int", True, False, Path())


def test_env_unknown_key_of_known_section_is_an_error(tmp_path: Path) -> None:
    env = {"CB_MATRIX_COLOUR": "blue", "CB_WEB_LISTN": "0.0.0.0:1"}
    problems = problems_of(write(tmp_path, MATRIX), env)
    assert "matrix.colour: unknown key (from CB_MATRIX_COLOUR)" in problems
    assert "web.listn: unknown key (did you mean listen?) (from CB_WEB_LISTN)" in problems
    assert len(problems) == 2


def test_env_other_cb_variables_are_ignored(tmp_path: Path) -> None:
    env = {"CB_SOMETHING": "x", "CB_FOO_BAR": "y", "CB_MATRIX": "z", "OTHER_MATRIX_X": "1"}
    load_config(write(tmp_path, MATRIX), env=env)


def test_env_non_secret_key_file_is_unknown(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, MATRIX), {"CB_MATRIX_DEVICE_NAME_FILE": "/x"})
    assert problems == [
        "matrix.device_name_file: unknown key (access_token and password and recovery_key can be "
        "read from a file, not device_name) (from CB_MATRIX_DEVICE_NAME_FILE)"
    ]


# --------------------------------------------------------------------------- secrets from files


def test_secret_file_from_toml_relative_to_config_dir(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pw").write_text("file-pass\n\n", encoding="utf-8")
    text = MATRIX.replace('password = "hunter2-secret"', 'password_file = "secrets/pw"')
    config = load_config(write(tmp_path, text), env={})
    assert config.matrix.password == SecretStr("file-pass")


def test_secret_file_from_env(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("syt_from_file  \n", encoding="utf-8")
    session = tmp_path / "session"
    session.write_text("session-from-file-0123456789abcdef0123", encoding="utf-8")
    env = {"CB_MATRIX_ACCESS_TOKEN_FILE": str(secret), "CB_WEB_SESSION_SECRET_FILE": str(session)}
    config = load_config(write(tmp_path, MATRIX), env=env)
    assert config.matrix.access_token == SecretStr("syt_from_file")
    assert config.web.session_secret == SecretStr("session-from-file-0123456789abcdef0123")


def test_env_secret_file_overrides_plain_value_in_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-env-file", encoding="utf-8")
    config = load_config(write(tmp_path, MATRIX), env={"CB_MATRIX_PASSWORD_FILE": str(secret)})
    assert config.matrix.password == SecretStr("from-env-file")


def test_secret_file_missing_names_key_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    problems = problems_of(write(tmp_path, MATRIX), {"CB_MATRIX_PASSWORD_FILE": str(missing)})
    assert problems == [
        f"matrix.password_file: file not found: {missing} (from CB_MATRIX_PASSWORD_FILE)"
    ]


def test_secret_file_missing_in_toml(tmp_path: Path) -> None:
    text = MATRIX.replace('password = "hunter2-secret"', 'password_file = "nope"')
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert problems == [f"matrix.password_file: file not found: {tmp_path / 'nope'} (from {path})"]


def test_secret_file_unreadable_or_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    env = {"CB_MATRIX_PASSWORD_FILE": str(empty), "CB_WEB_SESSION_SECRET_FILE": str(tmp_path)}
    problems = problems_of(write(tmp_path, MATRIX), env)
    assert f"matrix.password_file: file is empty: {empty} (from CB_MATRIX_PASSWORD_FILE)" in (
        problems
    )
    assert any(
        p.startswith(f"web.session_secret_file: cannot read {tmp_path}:")
        and p.endswith("(from CB_WEB_SESSION_SECRET_FILE)")
        for p in problems
    )
    # The missing password is reported once, as a file problem, not as "required".
    assert len(problems) == 2


def test_both_key_and_key_file_in_toml_is_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x", encoding="utf-8")
    path = write(tmp_path, MATRIX + f'password_file = "{secret}"\n')
    assert problems_of(path) == ["matrix.password: set either password or password_file, not both"]


def test_both_key_and_key_file_in_env_is_an_error(tmp_path: Path) -> None:
    env = {"CB_WEB_SESSION_SECRET": "s3cr3t-value", "CB_WEB_SESSION_SECRET_FILE": "/x"}
    problems = problems_of(write(tmp_path, MATRIX), env)
    assert problems == [
        "web.session_secret: set either session_secret or session_secret_file, not both "
        "(from CB_WEB_SESSION_SECRET and CB_WEB_SESSION_SECRET_FILE)"
    ]


# --------------------------------------------------------------------------- errors


def test_unknown_key_and_section_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, MATRIX + 'colour = "blue"\n[loging]\nlevel = "debug"\n[zzz]\n')
    assert problems_of(path) == [
        "loging: unknown section (did you mean logging?)",
        "zzz: unknown section",
        "matrix.colour: unknown key",
    ]


def test_section_must_be_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'web = "x"\n' + MATRIX)
    assert problems_of(path) == ["web: expected a table ([web])"]


def test_wrong_type_in_file_names_key_and_source(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MATRIX + 'encryption = "yes"\nautojoin_from = "example.org"\ndevice_name = 3\n',
    )
    assert problems_of(path) == [
        f"matrix.device_name: expected a string, got 3 (from {path})",
        f'matrix.encryption: expected true or false, got "yes" (from {path})',
        f'matrix.autojoin_from: expected a list of strings, got "example.org" (from {path})',
    ]


def test_missing_required(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, "[logging]\nlevel = 'info'\n")) == [
        "matrix.homeserver: required",
        "matrix.user_id: required",
        "matrix: one of password, password_file, access_token or access_token_file is required",
    ]
    assert problems_of(None) == problems_of(write(tmp_path, ""))


def test_multiple_problems_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
[matrix]
homeserver = "ftp://matrix.example.org"
user_id = "bot"
command_prefix = "! "
admin_room = "room"
autojoin_from = ["@ok:example.org", "not a server"]

[web]
listen = "localhost:99999"
public_url = "example.org"

[roles]
admins = ["@ok:example.org", "@bad"]

[logging]
level = "verbose"
format = "xml"
""",
    )
    env = {"CB_MATRIX_ENCRYPTION": "perhaps", "CB_DATABASE_URL": "not-a-url"}
    problems = problems_of(path, env)
    src = f"(from {path})"
    assert problems == [
        'matrix.encryption: expected true or false, got "perhaps" (from CB_MATRIX_ENCRYPTION)',
        "matrix.homeserver: expected an http(s) URL such as https://matrix.example.org, "
        f'got "ftp://matrix.example.org" {src}',
        f'matrix.user_id: expected a Matrix user id like @bot:example.org, got "bot" {src}',
        f'matrix.command_prefix: must not contain whitespace, got "! " {src}',
        "matrix.admin_room: expected a room id like !abc:example.org or an alias like "
        f'#room:example.org, got "room" {src}',
        "matrix.autojoin_from: expected Matrix user ids like @someone:example.org or server "
        f'names like example.org, got "not a server" {src}',
        "matrix: one of password, password_file, access_token or access_token_file is required",
        "database.url: expected a database URL such as sqlite+aiosqlite:///path/to/bot.db or "
        "postgresql+asyncpg://user@host/dbname (from CB_DATABASE_URL)",
        f'web.listen: port must be between 1 and 65535, got "localhost:99999" {src}',
        "web.public_url: expected an http(s) URL such as https://bot.example.org, "
        f'got "example.org" {src}',
        f'roles.admins: expected Matrix user ids like @someone:example.org, got "@bad" {src}',
        f'logging.level: expected one of debug, info, warning, error, got "verbose" {src}',
        f'logging.format: expected one of console, json, got "xml" {src}',
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("command_prefix", '""', "matrix.command_prefix: must not be empty"),
        ("device_name", '"  "', "matrix.device_name: must not be empty"),
        ("password", '""', "matrix.password: must not be empty"),
    ],
)
def test_empty_values(tmp_path: Path, key: str, value: str, message: str) -> None:
    text = MATRIX.replace('password = "hunter2-secret"', 'access_token = "t"')
    path = write(tmp_path, text + f"{key} = {value}\n")
    assert problems_of(path) == [f"{message} (from {path})"]


@pytest.mark.parametrize(
    "listen", ["127.0.0.1", ":8080", "localhost:http", "[nope]:80", "a b:80", "host:0"]
)
def test_invalid_listen(tmp_path: Path, listen: str) -> None:
    problems = problems_of(write(tmp_path, MATRIX), {"CB_WEB_LISTEN": listen})
    assert len(problems) == 1
    assert problems[0].startswith("web.listen: ")


@pytest.mark.parametrize("room", ["!abc:example.org", "#room:example.org:8448", "#a:[::1]"])
def test_valid_admin_rooms(tmp_path: Path, room: str) -> None:
    config = load_config(write(tmp_path, MATRIX), env={"CB_MATRIX_ADMIN_ROOM": room})
    assert config.matrix.admin_room == room


def test_homeserver_trailing_slash_removed(tmp_path: Path) -> None:
    env = {"CB_MATRIX_HOMESERVER": "https://matrix.example.org/"}
    assert load_config(write(tmp_path, MATRIX), env=env).matrix.homeserver == (
        "https://matrix.example.org"
    )


def test_invalid_toml_reports_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, MATRIX + "\nencryption = \n")
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: invalid TOML at line 6: ")


def test_invalid_toml_uses_the_path_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[matrix\n")
    monkeypatch.chdir(tmp_path)
    problems = problems_of(Path("config.toml"))
    assert len(problems) == 1
    assert problems[0].startswith("config.toml: invalid TOML at line 1: ")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    assert problems_of(missing) == [f"{missing}: file not found"]


def test_config_error_is_an_exception_with_lines() -> None:
    error = ConfigError(["a: one", "b: two"])
    assert isinstance(error, Exception)
    assert error.problems == ["a: one", "b: two"]
    assert str(error) == "a: one\nb: two"
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert copy.problems == error.problems
    assert str(copy) == str(error)


def test_empty_data_dir_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, MATRIX + '[data]\ndir = ""\n')
    assert problems_of(path) == [f"data.dir: must not be empty (from {path})"]


@pytest.mark.parametrize(
    "url", ["https://matrix.example.org:notaport", "https://[::1", "https://", "http:///x"]
)
def test_invalid_homeserver(tmp_path: Path, url: str) -> None:
    problems = problems_of(write(tmp_path, MATRIX), {"CB_MATRIX_HOMESERVER": url})
    assert len(problems) == 1
    assert problems[0].startswith("matrix.homeserver: expected an http(s) URL")


# --------------------------------------------------------------------------- paths


def test_relative_data_dir_resolves_against_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(write(conf_dir, MATRIX + '[data]\ndir = "../state/bot"\n'), env={})
    assert config.data.dir == tmp_path / "state" / "bot"
    assert config.database.url == f"sqlite+aiosqlite:///{tmp_path}/state/bot/bot.db"


def test_absolute_data_dir_stays(tmp_path: Path) -> None:
    target = tmp_path / "abs-data"
    config = load_config(write(tmp_path, MATRIX + f'[data]\ndir = "{target}"\n'), env={})
    assert config.data.dir == target
    assert config.database.url == f"sqlite+aiosqlite:///{target}/bot.db"


def test_relative_data_dir_from_env_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    monkeypatch.chdir(tmp_path)
    config = load_config(write(conf_dir, MATRIX), env={"CB_DATA_DIR": "var"})
    assert config.data.dir == tmp_path / "var"


def test_explicit_database_url_is_kept(tmp_path: Path) -> None:
    env = {"CB_DATABASE_URL": "postgresql+asyncpg://bot@db/bot", "CB_DATA_DIR": "/srv/bot"}
    config = load_config(write(tmp_path, MATRIX), env=env)
    assert config.database.url == "postgresql+asyncpg://bot@db/bot"
    assert config.data.dir == Path("/srv/bot")


# --------------------------------------------------------------------------- secrecy


def test_secrets_absent_from_repr_and_str(tmp_path: Path) -> None:
    text = (
        MATRIX
        + 'access_token = "syt_token_value"\n[web]\n'
        + 'session_secret = "sess-value-0123456789abcdef0123456789"\n'
    )
    config = load_config(write(tmp_path, text), env={})
    for rendering in (repr(config), str(config), repr(config.matrix), str(config.web)):
        for secret in (
            "hunter2-secret",
            "syt_token_value",
            "sess-value-0123456789abcdef0123456789",
        ):
            assert secret not in rendering
    assert config.matrix.access_token is not None
    assert config.matrix.access_token.get_secret_value() == "syt_token_value"


def test_secrets_absent_from_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
[matrix]
homeserver = "https://matrix.example.org"
user_id = "not-an-mxid"
password = "hunter2-secret"
password_file = "/nope"
access_token = 12345678

[database]
url = "postgresql://bot:db-secret-pw@db/bot x"

[web]
session_secret = ["sess-value-0123456789abcdef0123456789"]
""",
    )
    env = {"CB_WEB_SESSION_SECRET": "env-secret-value", "CB_WEB_SESSION_SECRET_FILE": "/x"}
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    text = str(info.value)
    assert len(info.value.problems) == 5, text
    for secret in (
        "hunter2-secret", "12345678", "db-secret-pw", "sess-value-0123456789abcdef0123456789",
        "env-secret",
    ):  # fmt: skip
        assert secret not in text
    assert "matrix.access_token: expected a string (from" in text


def test_redacted_dict(tmp_path: Path) -> None:
    text = MATRIX + '[database]\nurl = "postgresql+asyncpg://bot:dbpass@db:5432/bot"\n'
    config = load_config(write(tmp_path, text), env={"CB_ROLES_ADMINS": "@a:example.org"})
    data = redacted_dict(config)
    json.dumps(data)  # plain data
    assert data["source_path"] == str(tmp_path / "config.toml")
    assert data["matrix"]["password"] == "***"
    assert data["matrix"]["access_token"] is None
    assert data["web"]["session_secret"] is None
    assert data["matrix"]["user_id"] == "@bot:example.org"
    assert data["roles"]["admins"] == ["@a:example.org"]
    assert data["data"]["dir"] == str(tmp_path / "data")
    assert data["database"]["url"] == "postgresql+asyncpg://bot:***@db:5432/bot"
    assert set(data) == {
        "source_path",
        "matrix",
        "data",
        "database",
        "web",
        "roles",
        "logging",
        "sso",
        "gpt",
        "welcome",
        "scheduler",
        "access",
        "synapse",
        "metrics",
        "protections",
    }
    assert "hunter2-secret" not in json.dumps(data)
    assert "dbpass" not in json.dumps(data)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite+aiosqlite:///data/bot.db", "sqlite+aiosqlite:///data/bot.db"),
        ("postgresql://bot@db/bot", "postgresql://bot@db/bot"),
        ("postgresql://bot:p%40ss@[::1/bot", "postgresql://bot:***@[::1/bot"),
        ("postgresql://:pw@db/bot?x=1", "postgresql://:***@db/bot?x=1"),
    ],
)
def test_redacted_database_urls(tmp_path: Path, url: str, shown: str) -> None:
    config = load_config(write(tmp_path, MATRIX), env={"CB_DATABASE_URL": url})
    assert redacted_dict(config)["database"]["url"] == shown


def test_models_can_be_built_directly() -> None:
    # For other modules' tests: sections are plain frozen pydantic models.
    config = Config(
        matrix=MatrixSettings(
            homeserver="https://hs.example.org",
            user_id="@bot:example.org",
            access_token=SecretStr("t"),
        ),
        data=DataSettings(dir=Path("/tmp/x")),
        logging=LoggingSettings(level="DEBUG"),  # type: ignore[arg-type]
    )
    assert config.logging.level == "debug"
    assert config.web.listen_port == 8080
