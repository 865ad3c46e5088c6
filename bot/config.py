"""Typed settings for the bot, loaded from a TOML file plus ``CB_*`` environment variables.

Usage::

    from bot.config import ConfigError, load_config

    try:
        config = load_config("config.toml")
    except ConfigError as exc:
        print(exc)  # one line per problem, e.g. "matrix.user_id: required"
        raise SystemExit(2) from None

    config.matrix.homeserver                          # str, no trailing slash
    if config.matrix.password is not None:            # secrets are pydantic SecretStr | None
        password = config.matrix.password.get_secret_value()

Rules (the section and key names are a public contract):

* Every key may be overridden by ``CB_<SECTION>_<KEY>`` (upper case), e.g. ``CB_MATRIX_PASSWORD``;
  the environment wins over the file. Environment values are strings: booleans accept
  true/false/1/0/yes/no/on/off, integers parse, lists accept a JSON array (``["@a:b"]``) or a
  comma-separated string (``@a:b, @c:d``). An empty value counts as "not set", except for lists
  where it means the empty list. ``CB_<KNOWN SECTION>_<UNKNOWN KEY>`` is an error; other ``CB_*``
  variables are ignored.
* Secret keys (every key typed ``SecretStr``: ``password``, ``access_token``, ``session_secret``)
  may instead be read from a file: ``<key>_file = "/path"`` in TOML or ``CB_<SECTION>_<KEY>_FILE``.
  The file content, stripped of trailing whitespace, is the value. Setting both ``<key>`` and
  ``<key>_file`` in the same place is an error; the environment (either form) overrides the file.
* Relative paths written in the TOML file resolve against the file's directory; relative paths in
  environment variables (and everything when there is no file) resolve against the working
  directory.
* All problems are collected and raised together as one :class:`ConfigError`. Messages name the
  dotted key and, where it helps, the source; they never contain secret values.

To add a section: define a ``Section`` subclass and add one field for it to :class:`Config`.
Field types drive the parsing (``str``, ``bool``, ``int``, ``float``, ``Path``, ``SecretStr``,
``tuple[str, ...]``, optionally ``| None``); put format checks in ``field_validator``s raising
``ValueError("expected ..., got ...")`` (the message is used as is), and checks that involve
several keys in :meth:`Section.cross_check`.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

__all__ = [
    "Config",
    "ConfigError",
    "DataSettings",
    "DatabaseSettings",
    "LoggingSettings",
    "MatrixSettings",
    "RolesSettings",
    "Section",
    "WebSettings",
    "load_config",
    "redacted_dict",
]

ENV_PREFIX = "CB_"
REDACTED = "***"


MIN_SESSION_SECRET = 32


class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one human-readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems)  # args stay picklable

    def __str__(self) -> str:
        return "\n".join(self.problems)


# --------------------------------------------------------------------------- value checks

_SERVER_NAME = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?"
_SERVER_NAME_RE = re.compile(rf"^{_SERVER_NAME}$")
_MXID_RE = re.compile(rf"^@[^\s:]+:{_SERVER_NAME}$")
# Aliases are #name:server; room ids are !opaque:server, or !opaque alone from room version 12 on.
_ROOM_RE = re.compile(rf"^(?:[!#][^\s:]+:{_SERVER_NAME}|![A-Za-z0-9_\-+/=]+)$")
_DB_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MAX_ID_LENGTH = 255


def _show(value: object, limit: int = 60) -> str:
    """A short rendering of a (non-secret) value for error messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float | list | tuple | dict):
        try:
            text = json.dumps(list(value) if isinstance(value, tuple) else value)
        except (TypeError, ValueError):
            text = repr(value)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_mxid(value: str) -> bool:
    return len(value) <= _MAX_ID_LENGTH and bool(_MXID_RE.match(value))


def _is_server_name(value: str) -> bool:
    return len(value) <= _MAX_ID_LENGTH and bool(_SERVER_NAME_RE.match(value))


def _check_http_url(value: str, example: str) -> str:
    """Validate an http(s) URL and return it without trailing slash."""
    error = ValueError(f"expected an http(s) URL such as {example}, got {_show(value)}")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise error from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.fragment
        or any(c.isspace() for c in value)
    ):
        raise error
    return urlunsplit(parts._replace(path=parts.path.rstrip("/")))


def _check_mxids(values: tuple[str, ...]) -> tuple[str, ...]:
    bad = [v for v in values if not _is_mxid(v)]
    if bad:
        raise ValueError(f"expected Matrix user ids like @someone:example.org, got {_show(bad[0])}")
    return values


# --------------------------------------------------------------------------- sections


def _check_room(value: str) -> None:
    if not (len(value) <= _MAX_ID_LENGTH and _ROOM_RE.match(value)):
        raise ValueError(
            "expected a room id like !abc:example.org or an alias like #room:example.org, "
            f"got {_show(value)}"
        )


class Section(BaseModel):
    """Base class of the config sections: frozen, no unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[str]:
        """Checks involving several keys. ``values`` holds the keys that were set (after env
        overrides and ``*_file`` resolution, before validation). Return messages that are
        prefixed with the section name."""
        return []


class MatrixSettings(Section):
    """``[matrix]``: how the bot connects to its homeserver."""

    homeserver: str
    user_id: str
    password: SecretStr | None = None
    access_token: SecretStr | None = None
    device_name: str = "community-bot"
    command_prefix: str = "!"
    encryption: bool = True
    # "tofu": trust each device the first time it is seen, and keep its first keys (a change is
    # logged as a warning and not followed). "all": share keys with every device, unverified too.
    trust: Literal["tofu", "all"] = "tofu"
    admin_room: str | None = None
    # The rooms that --all and scheduled announcements reach (ids or aliases). Empty: every room
    # the bot is in that people can join by themselves (public, knock or restricted).
    community_rooms: tuple[str, ...] = ()
    # Users (@user:server) or whole servers (example.org) whose invites the bot accepts.
    # The admins in [roles] are always allowed, whatever this list says.
    autojoin_from: tuple[str, ...] = ()

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[str]:
        if values.get("password") is None and values.get("access_token") is None:
            return ["one of password, password_file, access_token or access_token_file is required"]
        return []

    @field_validator("homeserver")
    @classmethod
    def _homeserver(cls, value: str) -> str:
        return _check_http_url(value, "https://matrix.example.org")

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        if not _is_mxid(value):
            raise ValueError(f"expected a Matrix user id like @bot:example.org, got {_show(value)}")
        return value

    @field_validator("password", "access_token")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("device_name")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("command_prefix")
    @classmethod
    def _command_prefix(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        if any(c.isspace() for c in value):
            raise ValueError(f"must not contain whitespace, got {_show(value)}")
        return value

    @field_validator("admin_room")
    @classmethod
    def _admin_room(cls, value: str | None) -> str | None:
        if value is not None:
            _check_room(value)
        return value

    @field_validator("community_rooms")
    @classmethod
    def _community_rooms(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            _check_room(value)
        return values

    @field_validator("autojoin_from")
    @classmethod
    def _autojoin_from(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in values if not (_is_mxid(v) or _is_server_name(v))]
        if bad:
            raise ValueError(
                "expected Matrix user ids like @someone:example.org or server names like "
                f"example.org, got {_show(bad[0])}"
            )
        return values


class DataSettings(Section):
    """``[data]``: where the bot keeps its files. ``dir`` is absolute after loading."""

    dir: Path = Path("data")


class DatabaseSettings(Section):
    """``[database]``: SQLAlchemy async URL. When not set, load_config derives
    ``sqlite+aiosqlite:///<data.dir>/bot.db``."""

    url: str = "sqlite+aiosqlite:///data/bot.db"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        # Never echo the value: it may contain a password.
        if not _DB_URL_RE.match(value) or any(c.isspace() for c in value):
            raise ValueError(
                "expected a database URL such as sqlite+aiosqlite:///path/to/bot.db or "
                "postgresql+asyncpg://user@host/dbname"
            )
        return value


class WebSettings(Section):
    """``[web]``: the small web app (SSO callback and friends)."""

    listen: str = "127.0.0.1:8080"
    public_url: str = "http://127.0.0.1:8080"
    session_secret: SecretStr | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _split_listen(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return _check_http_url(value, "https://bot.example.org")

    @field_validator("session_secret")
    @classmethod
    def _session_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_SESSION_SECRET:
            raise ValueError(
                f"must be at least {MIN_SESSION_SECRET} characters (e.g. `openssl rand -hex 32`)"
            )
        return value

    @property
    def listen_host(self) -> str:
        """Host part of ``listen`` (IPv6 without brackets)."""
        return _split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        """Port part of ``listen``."""
        return _split_listen(self.listen)[1]


def _split_listen(value: str) -> tuple[str, int]:
    error = ValueError(f"expected host:port such as 127.0.0.1:8080, got {_show(value)}")
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise error
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {_show(value)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise error from None
    elif not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", host):
        raise error
    return host, port


class RolesSettings(Section):
    """``[roles]``: who may do what."""

    admins: tuple[str, ...] = ()

    @field_validator("admins")
    @classmethod
    def _admins(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _check_mxids(values)


LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["console", "json"]


class LoggingSettings(Section):
    """``[logging]``."""

    level: LogLevel = "info"
    format: LogFormat = "console"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _choice(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
        allowed = typing.get_args(cls.model_fields[info.field_name].annotation)
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {_show(value)}")
        return value


_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> int:
    """Seconds in a duration such as ``90s``, ``10m``, ``2h`` or ``7d``."""
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError(f"expected a duration such as 10m, 90s, 2h or 7d, got {_show(value)}")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


class ProviderSettings(Section):
    """One ``[[sso.providers]]`` table: an OpenID Connect provider, or GitHub (plain OAuth2)."""

    id: str
    name: str | None = None
    kind: Literal["oidc", "github"] = "oidc"
    # OIDC: the issuer URL; discovery is read from <issuer>/.well-known/openid-configuration.
    issuer: str | None = None
    client_id: str
    client_secret: SecretStr
    # Default: openid profile email (OIDC), read:user user:email (GitHub; plus read:org with teams).
    scopes: tuple[str, ...] = ()
    admin_groups: tuple[str, ...] = ()
    moderator_groups: tuple[str, ...] = ()
    groups_claim: str = "groups"
    # OIDC only: audiences besides client_id that an ID token may also name (default: none, so
    # a token meant for other clients too is refused).
    trusted_audiences: tuple[str, ...] = ()
    # GitHub only: groups are "<org>/<team>" for teams of this organisation (needs read:org).
    github_org: str | None = None
    # GitHub only, for GitHub Enterprise or tests: where its OAuth and API endpoints live.
    github_url: str = "https://github.com"
    github_api_url: str = "https://api.github.com"

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", value):
            raise ValueError(
                f"expected lower-case letters, digits and dashes (like authentik), got {_show(value)}"
            )
        return value

    @field_validator("issuer", "github_url", "github_api_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, "https://auth.example.org")

    @field_validator("client_secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[str]:
        if values.get("kind", "oidc") == "oidc" and values.get("issuer") is None:
            return ["issuer is required for an OpenID Connect provider"]
        return []

    @property
    def display_name(self) -> str:
        return self.name or ("GitHub" if self.kind == "github" else self.id.capitalize())

    @property
    def scope_list(self) -> tuple[str, ...]:
        if self.scopes:
            return self.scopes
        if self.kind == "github":
            return ("read:user", "user:email", *(("read:org",) if self.github_org else ()))
        return ("openid", "profile", "email")


class SsoSettings(Section):
    """``[sso]``: one-time login links and the identity providers they lead to."""

    link_ttl: str = "10m"
    providers: tuple[ProviderSettings, ...] = ()

    @field_validator("link_ttl")
    @classmethod
    def _link_ttl(cls, value: str) -> str:
        seconds = parse_duration(value)
        if not 60 <= seconds <= 86400:
            raise ValueError(f"must be between 1m and 24h, got {_show(value)}")
        return value

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[str]:
        providers = values.get("providers")
        if not isinstance(providers, tuple):
            return []
        ids = [p.id for p in providers]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        return [f"providers: id {d!r} is used twice" for d in dupes]

    @property
    def link_ttl_seconds(self) -> int:
        return parse_duration(self.link_ttl)

    def provider(self, provider_id: str) -> ProviderSettings | None:
        return next((p for p in self.providers if p.id == provider_id), None)


class GptSettings(Section):
    """``[gpt]``: the GPT relay, through any OpenAI-compatible endpoint."""

    enabled: bool = True
    base_url: str = "https://api.openai.com/v1"
    # Also read from OPENAI_API_KEY when neither api_key nor CB_GPT_API_KEY is set.
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    temperature: float = 0.7
    system_prompt: str = (
        "You are the assistant of a community chat on Matrix. Be friendly and concise, and answer "
        "in Markdown."
    )
    timeout: float = 60.0
    max_retries: int = 2
    stream: bool = True
    require_sso: bool = True
    # Tokens (prompt + answer) per user per UTC day; 0 means no limit.
    daily_token_quota: int = 20000
    moderator_daily_token_quota: int | None = None
    admin_daily_token_quota: int | None = None
    # The longest answer asked of the model, in tokens (less when a member's quota leaves less).
    max_tokens: int = Field(default=1024, ge=16, le=200_000)
    history_token_budget: int = 3000
    summarize: bool = False
    history_retention_days: int = 90

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _check_http_url(value, "https://api.openai.com/v1")

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if not 0 <= value <= 2:
            raise ValueError(f"expected a number from 0 to 2, got {_show(value)}")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"expected seconds above 0, got {_show(value)}")
        return value

    @field_validator(
        "max_retries", "daily_token_quota", "moderator_daily_token_quota",
        "admin_daily_token_quota", "history_retention_days",
    )  # fmt: skip
    @classmethod
    def _not_negative(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError(f"expected 0 or more, got {_show(value)}")
        return value

    @field_validator("history_token_budget")
    @classmethod
    def _budget(cls, value: int) -> int:
        if value < 200:
            raise ValueError(f"expected at least 200 tokens, got {_show(value)}")
        return value

    @field_validator("model", "system_prompt")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class WelcomeSettings(Section):
    """``[welcome]``: greeting newcomers in community rooms."""

    # Room ids or aliases; empty: welcome nowhere.
    rooms: tuple[str, ...] = ()
    # Placeholders: {name} (display name), {mention} (a pill), {room} (room name), {login_hint}.
    message: str = "Welcome {mention} to {room}! {login_hint}"
    dm_unlinked: bool = True
    batch_window: str = "10s"
    # A reminder DM to newcomers still unlinked after this long ("0s": never).
    reminder_after: str = "24h"

    @field_validator("rooms")
    @classmethod
    def _rooms(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in values if not _ROOM_RE.match(v)]
        if bad:
            raise ValueError(
                f"expected room ids (!abc:example.org) or aliases (#room:example.org), got {_show(bad[0])}"
            )
        return values

    @field_validator("batch_window", "reminder_after")
    @classmethod
    def _duration(cls, value: str) -> str:
        if value.strip() != "0s":
            parse_duration(value)
        return value

    @field_validator("message")
    @classmethod
    def _message(cls, value: str) -> str:
        import string

        try:
            parts = [
                (f, spec, conv)
                for _, f, spec, conv in string.Formatter().parse(value)
                if f is not None
            ]
        except ValueError as problem:
            raise ValueError(f"is not a valid template: {problem}") from None
        if any(spec or conv for _, spec, conv in parts):
            raise ValueError("placeholders take no format ({name}, not {name:...})")
        unknown = {f for f, _, _ in parts} - {"name", "mention", "room", "login_hint"}
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{sorted(unknown)[0]}}}: use name, mention, room, login_hint"
            )
        return value

    @property
    def batch_window_seconds(self) -> int:
        return parse_duration(self.batch_window)

    @property
    def reminder_after_seconds(self) -> int:
        return 0 if self.reminder_after.strip() == "0s" else parse_duration(self.reminder_after)


class SchedulerSettings(Section):
    """``[scheduler]``: scheduled announcements and periodic jobs."""

    # The time zone `!schedule` times are written in (IANA name, e.g. Europe/Berlin).
    timezone: str = "UTC"
    # A run missed while the bot was down still fires on start if it is at most this late.
    missed_run_grace: str = "1h"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {_show(value)}; use an IANA name like Europe/Berlin"
            ) from None
        return value

    @field_validator("missed_run_grace")
    @classmethod
    def _grace(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def missed_run_grace_seconds(self) -> int:
        return parse_duration(self.missed_run_grace)


class Config(BaseModel):
    """The whole configuration. One field per section; field order is validation order."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    matrix: MatrixSettings
    data: DataSettings = Field(default_factory=DataSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    roles: RolesSettings = Field(default_factory=RolesSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    sso: SsoSettings = Field(default_factory=SsoSettings)
    gpt: GptSettings = Field(default_factory=GptSettings)
    welcome: WelcomeSettings = Field(default_factory=WelcomeSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    source_path: Path | None = None


@functools.cache
def _sections() -> dict[str, type[Section]]:
    """The sections, by name, in validation order: the Config fields typed as a Section."""
    sections: dict[str, type[Section]] = {}
    for name, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            sections[name] = annotation
    return sections


# --------------------------------------------------------------------------- loading

_Kind = Literal["str", "secret", "bool", "int", "float", "path", "list", "tables"]
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _field_kind(model: type[Section], name: str) -> _Kind:
    """How to parse a field's raw values, from its annotation (``X | None`` counts as ``X``)."""
    annotation = model.model_fields[name].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else str
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if annotation is SecretStr:
        return "secret"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if typing.get_origin(annotation) in (tuple, list, frozenset, set):
        item = typing.get_args(annotation)[0]
        if isinstance(item, type) and issubclass(item, Section):
            return "tables"
        return "list"
    return "str"  # str and Literal choices


class _Value(typing.NamedTuple):
    value: object
    label: str | None  # where it came from, for messages: env var name, file path
    from_env: bool


_INVALID = object()  # stands for a value that was set but failed its own checks


class _Bad(Exception):
    """One problem with one value; the message is complete except for key and source."""


def _coerce(kind: _Kind, value: object, from_env: bool, base_dir: Path) -> object:
    """Turn a raw value from TOML (typed) or the environment (a string) into the field's type."""
    secret = kind == "secret"
    got = "" if secret else f", got {_show(value)}"
    if from_env and kind != "list":
        assert isinstance(value, str)
        if kind == "bool":
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise _Bad(f"expected true or false{got}")
        if kind == "int":
            try:
                return int(value.strip())
            except ValueError:
                raise _Bad(f"expected an integer{got}") from None
        if kind == "float":
            try:
                return float(value.strip())
            except ValueError:
                raise _Bad(f"expected a number{got}") from None
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Bad(f"expected true or false{got}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer{got}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad(f"expected a number{got}")
        return float(value)
    if kind == "list":
        if from_env:
            assert isinstance(value, str)
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise _Bad(
                        f"expected a JSON array of strings or a comma-separated list{got}"
                    ) from None
            else:
                value = [item.strip() for item in text.split(",") if item.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Bad(f"expected a list of strings{got}")
        return tuple(value)
    if not isinstance(value, str):
        raise _Bad(f"expected a string{got}")
    if kind == "secret":
        return SecretStr(value)
    if kind == "path":
        if not value.strip():
            raise _Bad("must not be empty")
        path = Path(value).expanduser()
        return Path(os.path.normpath(base_dir / path))
    return value


def _read_secret_file(raw: object, base_dir: Path) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise _Bad(f"expected a file path, got {_show(raw)}")
    path = Path(os.path.normpath(base_dir / Path(raw).expanduser()))
    try:
        content = path.read_text(encoding="utf-8").rstrip()
    except FileNotFoundError:
        raise _Bad(f"file not found: {path}") from None
    except UnicodeDecodeError:
        raise _Bad(f"file is not valid UTF-8: {path}") from None
    except OSError as exc:
        raise _Bad(f"cannot read {path}: {exc.strerror or exc}") from None
    if not content:
        raise _Bad(f"file is empty: {path}")
    return content


def _suggest(name: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _suffix(label: str | None) -> str:
    return f" (from {label})" if label else ""


def _read_toml(path: Path, display: str) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{display}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{display}: cannot read: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{display}: not valid UTF-8"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
        if match:
            what, line, column = match.groups()
            problem = f"invalid TOML at line {line}: {what} (column {column})"
        else:
            match = re.fullmatch(r"(.*) \(at end of document\)", message, re.DOTALL)
            what = match.group(1) if match else message
            problem = f"invalid TOML at end of document: {what}"
        raise ConfigError([f"{display}: {problem}"]) from None


def _belongs_to_tables(key: str, tables: set[str]) -> bool:
    return any(key == name or key.startswith(f"{name}_") for name in tables)


def _resolve_tables(
    section_name: str,
    model: type[Section],
    field: str,
    layer_of: dict[str, dict[str, _Value]],
    *,
    file_base: Path,
    cwd: Path,
    problems: list[str],
) -> object:
    """A list of tables such as ``[[sso.providers]]``: each is checked like a section. The
    environment reaches a table by its ``id``: ``CB_SSO_PROVIDERS_<ID>_<KEY>``."""
    item_model = typing.get_args(model.model_fields[field].annotation)[0]
    raw = layer_of["file"].get(field)
    env_entries = layer_of["env"]
    if raw is not None and (
        not isinstance(raw.value, list) or not all(isinstance(t, dict) for t in raw.value)
    ):
        problems.append(
            f"{section_name}.{field}: expected tables written as [[{section_name}.{field}]]"
        )
        return _INVALID
    tables: list[dict[str, Any]] = raw.value if raw is not None else []  # type: ignore[assignment]
    result: list[Section] = []
    invalid = False
    claimed: set[str] = set()
    for index, table in enumerate(tables):
        ident = table.get("id")
        label = f"{section_name}.{field}[{ident if isinstance(ident, str) else index}]"
        env_for_table: dict[str, _Value] = {}
        if isinstance(ident, str):
            prefix = f"{field}_{ident.replace('-', '_').lower()}_"
            for key, item in env_entries.items():
                if key.startswith(prefix):
                    env_for_table[key[len(prefix) :]] = item
                    claimed.add(key)
        file_for_table = {k: _Value(v, raw.label if raw else None, False) for k, v in table.items()}
        section, _ = _resolve_section(
            label, item_model, file_for_table, env_for_table,
            file_base=file_base, cwd=cwd, problems=problems,
        )  # fmt: skip
        if section is None:
            invalid = True
        else:
            result.append(section)
    for key, item in env_entries.items():
        if _belongs_to_tables(key, {field}) and key not in claimed:
            problems.append(
                f"{section_name}.{key}: no [[{section_name}.{field}]] has the id this names"
                f"{_suffix(item.label)}"
            )
            invalid = True
    if invalid:
        return _INVALID
    return tuple(result) if raw is not None else None


def _resolve_section(
    section_name: str,
    model: type[Section],
    file_entries: dict[str, _Value],
    env_entries: dict[str, _Value],
    *,
    file_base: Path,
    cwd: Path,
    problems: list[str],
) -> tuple[Section | None, dict[str, object]]:
    """Pick each key's value (environment over file, ``*_file`` secrets), coerce, validate.
    Problems are appended to ``problems``; returns the section (None when invalid) and the raw
    values that were set. Fields that hold lists of tables (``[[sso.providers]]``) recurse."""
    layer_of = {"file": file_entries, "env": env_entries}
    tables = {name for name in model.model_fields if _field_kind(model, name) == "tables"}
    table_values: dict[str, object] = {}
    for name in tables:
        table_values[name] = _resolve_tables(
            section_name, model, name, layer_of, file_base=file_base, cwd=cwd, problems=problems
        )
    fields = model.model_fields
    secrets = {name for name in fields if _field_kind(model, name) == "secret"}
    file_keys = {f"{name}_file": name for name in secrets}

    for layer in (file_entries, env_entries):
        for key, item in layer.items():
            if key in fields or key in file_keys or _belongs_to_tables(key, tables):
                continue
            if key.endswith("_file") and key.removesuffix("_file") in fields:
                readable = " and ".join(sorted(secrets)) or "no key of this section"
                hint = f" ({readable} can be read from a file, not {key.removesuffix('_file')})"
            else:
                hint = _suggest(key, [*fields, *file_keys])
            where = _suffix(item.label if item.from_env else None)
            problems.append(f"{section_name}.{key}: unknown key{hint}{where}")

    values: dict[str, object] = {}
    labels: dict[str, str | None] = {}
    failed: set[str] = set()
    for name in fields:
        if name in tables:
            continue
        kind = _field_kind(model, name)
        chosen: tuple[str, _Value] | None = None  # (key actually used, value)
        for entries in (env_entries, file_entries):
            plain = entries.get(name)
            from_file = entries.get(f"{name}_file") if name in secrets else None
            if plain is not None and plain.from_env and plain.value == "" and kind != "list":
                plain = None  # empty env value: not set
            if from_file is not None and from_file.from_env and from_file.value == "":
                from_file = None
            if plain is not None and from_file is not None:
                where = f" (from {plain.label} and {from_file.label})" if plain.from_env else ""
                problems.append(
                    f"{section_name}.{name}: set either {name} or {name}_file, not both{where}"
                )
                failed.add(name)
                values[name] = _INVALID
                break
            if from_file is not None:
                chosen = (f"{name}_file", from_file)
                break
            if plain is not None:
                chosen = (name, plain)
                break
        if name in failed or chosen is None:
            continue
        key, item = chosen
        base = file_base if not item.from_env else cwd
        try:
            if key == name:
                values[name] = _coerce(kind, item.value, item.from_env, base)
                labels[name] = item.label
            else:
                content = _read_secret_file(item.value, base)
                values[name] = SecretStr(content)
                labels[name] = f"{key} in {item.label}" if not item.from_env else item.label
        except _Bad as exc:
            problems.append(f"{section_name}.{key}: {exc}{_suffix(item.label)}")
            failed.add(name)
            values[name] = _INVALID  # set, for cross_check, but not validated

    values.update({k: v for k, v in table_values.items() if v is not None})
    failed.update(k for k, v in table_values.items() if v is _INVALID)
    try:
        section: Section | None = model.model_validate(
            {k: v for k, v in values.items() if k not in failed}
        )
    except ValidationError as exc:
        section = None
        for error in exc.errors(include_input=False, include_url=False):
            loc = error.get("loc", ())
            field = str(loc[0]) if loc else ""
            if field in failed:
                continue
            if error["type"] == "missing":
                message = "required"
            elif error["type"] == "value_error" and "error" in error.get("ctx", {}):
                message = str(error["ctx"]["error"])
            else:
                message = error["msg"]
            key = f"{section_name}.{field}" if field else section_name
            problems.append(f"{key}: {message}{_suffix(labels.get(field))}")
    problems.extend(f"{section_name}: {msg}" for msg in model.cross_check(values))
    return section, values


def load_config(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> Config:
    """Load and validate the configuration.

    ``path`` is the TOML file (``None``: environment and defaults only); ``env`` defaults to
    ``os.environ``. Raises :class:`ConfigError` listing every problem found.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    sections = _sections()
    problems: list[str] = []
    cwd = Path.cwd()

    # layers[section][key] = _Value, for the file and for the environment.
    file_layer: dict[str, dict[str, _Value]] = {name: {} for name in sections}
    env_layer: dict[str, dict[str, _Value]] = {name: {} for name in sections}

    source_path: Path | None = None
    file_base = cwd
    if path is not None:
        display = os.fspath(path)
        source_path = Path(os.path.abspath(Path(path).expanduser()))
        file_base = source_path.parent
        document = _read_toml(source_path, display)
        for section_name, table in document.items():
            if section_name not in sections:
                problems.append(
                    f"{section_name}: unknown section{_suggest(section_name, sections)}"
                )
                continue
            if not isinstance(table, dict):
                problems.append(f"{section_name}: expected a table ([{section_name}])")
                continue
            for key, value in table.items():
                file_layer[section_name][key] = _Value(value, display, from_env=False)

    by_prefix = sorted(sections, key=len, reverse=True)
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        for section_name in by_prefix:
            prefix = f"{ENV_PREFIX}{section_name.upper()}_"
            if var.startswith(prefix):
                key = var[len(prefix) :].lower()
                env_layer[section_name][key] = _Value(environ[var], var, from_env=True)
                break

    values_by_section: dict[str, dict[str, object]] = {}
    built: dict[str, Section] = {}
    for section_name, model in sections.items():
        section, values = _resolve_section(
            section_name, model, file_layer[section_name], env_layer[section_name],
            file_base=file_base, cwd=cwd, problems=problems,
        )  # fmt: skip
        values_by_section[section_name] = values
        if section is not None:
            built[section_name] = section

    if problems:
        raise ConfigError(problems)

    # Derived values: the default data dir is relative to the config file (or the working
    # directory); the default database lives in it.
    data = built["data"]
    if "dir" not in values_by_section["data"]:
        data = data.model_copy(update={"dir": Path(os.path.normpath(file_base / data.dir))})
        built["data"] = data
    if "url" not in values_by_section["database"]:
        db_url = f"sqlite+aiosqlite:///{(data.dir / 'bot.db').as_posix()}"
        built["database"] = built["database"].model_copy(update={"url": db_url})
    # The OpenAI SDK's own variable, as a last resort for the GPT relay's key.
    if built["gpt"].api_key is None and environ.get("OPENAI_API_KEY"):
        built["gpt"] = built["gpt"].model_copy(
            update={"api_key": SecretStr(environ["OPENAI_API_KEY"])}
        )

    return Config(**built, source_path=source_path)


# --------------------------------------------------------------------------- display


def _redact_url(url: str) -> str:
    """Hide the password of a URL like scheme://user:password@host/..."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^/?#]*@", rf"\1:{REDACTED}@", url)


def _plain(value: object) -> object:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Section):
        return {key: _plain(getattr(value, key)) for key in type(value).model_fields}
    return value


def redacted_dict(config: Config) -> dict[str, Any]:
    """The configuration as plain data for display: secrets (when set) become ``"***"``,
    the password of the database URL too; paths are strings and lists are lists."""
    result: dict[str, Any] = {
        "source_path": str(config.source_path) if config.source_path else None
    }
    for name in _sections():
        section = getattr(config, name)
        result[name] = {key: _plain(getattr(section, key)) for key in type(section).model_fields}
    result["database"]["url"] = _redact_url(config.database.url)
    return result
