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
    config.sso.link_ttl, config.scheduler.timezone    # a timedelta, a ZoneInfo

Rules (the section and key names are a public contract):

* Every key may be overridden by ``CB_<SECTION>_<KEY>`` (upper case), e.g. ``CB_MATRIX_PASSWORD``;
  the environment wins over the file. Environment values are strings: booleans accept
  true/false/1/0/yes/no/on/off, numbers parse, lists accept a JSON array (``["@a:b"]``) or a
  comma-separated string (``@a:b, @c:d``). An empty value counts as "not set", except for lists
  where it means the empty list. ``CB_<KNOWN SECTION>_<UNKNOWN KEY>`` is an error; other ``CB_*``
  variables are ignored. In the file, values have their type already (``true``, not ``"yes"``).
* Secret keys (every key typed ``SecretStr``: ``password``, ``access_token``, ``session_secret``…)
  may instead be read from a file: ``<key>_file = "/path"`` in TOML or ``CB_<SECTION>_<KEY>_FILE``.
  The file content, stripped of trailing whitespace, is the value. Setting both ``<key>`` and
  ``<key>_file`` in the same place is an error; the environment (either form) overrides the file.
* Relative paths written in the TOML file resolve against the file's directory; relative paths in
  environment variables (and everything when there is no file) resolve against the working
  directory. Durations are written like ``10m``, ``90s`` or ``1h30m`` (:mod:`bot.durations`).
* All problems are collected and raised together as one :class:`ConfigError`. Messages name the
  dotted key and, where it helps, the source; they never contain secret values.

Reading the sources is :mod:`bot.config_sources`; pydantic validates. To add a section: define a
``Section`` subclass and add one field for it to :class:`Config`. Field types drive the parsing;
put ranges in ``Field(ge=..., le=...)`` with an ``OutOfRange`` message, format checks in
validators raising ``ValueError("expected ..., got ...")`` (the message is used as is), and checks
that involve several keys in :meth:`Section.cross_check`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import string
import typing
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from bot.config_protections import ProtectionsSettings
from bot.config_sources import ConfigError, OutOfRange, Section, read_sections, show
from bot.config_sources import coerce as _coerce  # noqa: F401 - reached here by the tests
from bot.durations import compact_duration, parse_duration
from bot.matrix_ids import is_room, is_server_name, is_user_id
from bot.recovery_key import decode_recovery_key

__all__ = [
    "Config", "ConfigError", "DataSettings", "DatabaseSettings", "LoggingSettings",
    "MatrixSettings", "RolesSettings", "Section", "WebSettings", "load_config", "redacted_dict",
]  # fmt: skip

REDACTED = "***"
MIN_SESSION_SECRET = 32

# --------------------------------------------------------------------------- value types


def _check_http_url(value: str, example: str) -> str:
    """Validate an http(s) URL and return it without trailing slash."""
    error = ValueError(f"expected an http(s) URL such as {example}, got {show(value)}")
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


def _split_listen(value: str) -> tuple[str, int]:
    error = ValueError(f"expected host:port such as 127.0.0.1:8080, got {show(value)}")
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise error
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {show(value)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise error from None
    elif not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", host):
        raise error
    return host, port


def _checked(test: Callable[[Any], object], expected: str) -> AfterValidator:
    """A format check: ``expected <expected>, got "<value>"`` when ``test`` fails."""

    def check(value: Any) -> Any:
        if not test(value):
            raise ValueError(f"expected {expected}, got {show(value)}")
        return value

    return AfterValidator(check)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _duration(value: object) -> object:
    duration = parse_duration(value) if isinstance(value, str) else value  # or a timedelta
    if duration is None:
        raise ValueError(f"expected a duration such as 10m, 90s, 2h or 7d, got {show(value)}")
    return duration


def _as_duration(value: object) -> timedelta | None:
    """For cross checks, which see values before validation: None when not a duration."""
    if isinstance(value, timedelta):
        return value
    return parse_duration(value) if isinstance(value, str) else None


def _zone(value: object) -> object:
    try:
        return ZoneInfo(value) if isinstance(value, str) else value
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {show(value)}; use an IANA name like Europe/Berlin"
        ) from None


def _http_url(example: str) -> AfterValidator:
    return AfterValidator(lambda value: _check_http_url(value, example))


def _secret_not_blank(value: SecretStr) -> SecretStr:
    _not_blank(value.get_secret_value())
    return value


def _listen(value: str) -> str:
    _split_listen(value)
    return value


NonBlank = Annotated[str, AfterValidator(_not_blank)]
Secret = Annotated[SecretStr, AfterValidator(_secret_not_blank)]


def _recovery_key(value: SecretStr) -> SecretStr:
    decode_recovery_key(value.get_secret_value())  # its message never contains the key
    return value


RecoveryKey = Annotated[SecretStr, AfterValidator(_recovery_key)]
HomeserverUrl = Annotated[str, _http_url("https://matrix.example.org")]
PublicUrl = Annotated[str, _http_url("https://bot.example.org")]
ProviderUrl = Annotated[str, _http_url("https://auth.example.org")]
ApiUrl = Annotated[str, _http_url("https://api.openai.com/v1")]
Listen = Annotated[str, AfterValidator(_listen)]
UserId = Annotated[str, _checked(is_user_id, "a Matrix user id like @bot:example.org")]
RoomRef = Annotated[str, _checked(
    is_room, "a room id like !abc:example.org or an alias like #room:example.org"
)]  # fmt: skip
# Items of lists, whose messages speak of the list.
ListedUserId = Annotated[str, _checked(is_user_id, "Matrix user ids like @someone:example.org")]
ListedRoom = Annotated[str, _checked(
    is_room, "room ids (!abc:example.org) or aliases (#room:example.org)"
)]  # fmt: skip
UserOrServer = Annotated[str, _checked(
    lambda v: is_user_id(v) or is_server_name(v),
    "Matrix user ids like @someone:example.org or server names like example.org",
)]  # fmt: skip
ProviderId = Annotated[str, _checked(
    re.compile(r"[a-z0-9][a-z0-9-]{0,31}").fullmatch,
    "lower-case letters, digits and dashes (like authentik)",
)]  # fmt: skip
Duration = Annotated[timedelta, BeforeValidator(_duration)]
TimeZone = Annotated[ZoneInfo, BeforeValidator(_zone)]
Count = Annotated[int, Field(ge=0), OutOfRange("expected 0 or more")]
OptionalCount = Annotated[int | None, Field(ge=0), OutOfRange("expected 0 or more")]

# --------------------------------------------------------------------------- sections


class MatrixSettings(Section):
    """``[matrix]``: how the bot connects to its homeserver."""

    homeserver: HomeserverUrl
    user_id: UserId
    password: Secret | None = None
    access_token: Secret | None = None
    device_name: NonBlank = "community-bot"
    command_prefix: str = "!"
    encryption: bool = True
    # "tofu": trust each device the first time it is seen, and keep its first keys (a change is
    # logged as a warning and not followed). "all": share keys with every device, unverified too.
    trust: Literal["tofu", "all"] = "tofu"
    admin_room: RoomRef | None = None
    # The rooms that --all and scheduled announcements reach (ids or aliases). Empty: every room
    # the bot is in that people can join by themselves (public, knock or restricted).
    community_rooms: tuple[RoomRef, ...] = ()
    # Users (@user:server) or whole servers (example.org) whose invites the bot accepts.
    # The admins in [roles] are always allowed, whatever this list says.
    autojoin_from: tuple[UserOrServer, ...] = ()
    # The secret-storage recovery key (`community-bot recovery-key` makes it): lets a bot with an
    # empty data dir restore its cross-signing identity and room-key backup. Never echoed.
    recovery_key: RecoveryKey | None = None

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[str]:
        if values.get("password") is None and values.get("access_token") is None:
            return ["one of password, password_file, access_token or access_token_file is required"]
        return []

    @field_validator("command_prefix")
    @classmethod
    def _command_prefix(cls, value: str) -> str:
        if any(c.isspace() for c in _not_blank(value)):
            raise ValueError(f"must not contain whitespace, got {show(value)}")
        return value


class DataSettings(Section):
    """``[data]``: where the bot keeps its files. ``dir`` is absolute after loading."""

    dir: Path = Path("data")


class DatabaseSettings(Section):
    """``[database]``: SQLAlchemy async URL. When not set, load_config derives
    ``sqlite+aiosqlite:///<data.dir>/bot.db``."""

    url: str = "sqlite+aiosqlite:///data/bot.db"
    # Active/standby on PostgreSQL (bot/leader.py): the active process renews its lease every
    # `leader_heartbeat`; a standby takes over once `leader_lease` passed without renewal.
    leader_lease: Duration = timedelta(seconds=10)
    leader_heartbeat: Duration = timedelta(seconds=3)

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[str]:
        lease = _as_duration(values.get("leader_lease", timedelta(seconds=10)))
        beat = _as_duration(values.get("leader_heartbeat", timedelta(seconds=3)))
        problems = []
        if lease is not None and not timedelta(seconds=2) <= lease <= timedelta(minutes=10):
            problems.append("leader_lease: expected between 2s and 10m")
        if beat is not None and beat < timedelta(seconds=1):
            problems.append("leader_heartbeat: expected at least 1s")
        if not problems and lease is not None and beat is not None and beat * 2 > lease:
            problems.append("leader_heartbeat: expected at most half of leader_lease, so one "
                            "missed heartbeat does not cost the lease")  # fmt: skip
        return problems

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        # Never echo the value: it may contain a password.
        if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value) or any(c.isspace() for c in value):
            raise ValueError(
                "expected a database URL such as sqlite+aiosqlite:///path/to/bot.db or "
                "postgresql+asyncpg://user@host/dbname"
            )
        return value


class WebSettings(Section):
    """``[web]``: the small web app (SSO callback and friends)."""

    listen: Listen = "127.0.0.1:8080"
    public_url: PublicUrl = "http://127.0.0.1:8080"
    session_secret: SecretStr | None = None
    # /readyz answers 503 when the bot's last sync is older than this (or the database does not
    # answer, or it is not logged in).
    ready_max_sync_age: Annotated[
        Duration, Field(ge=timedelta(seconds=1)), OutOfRange("must be at least 1s")
    ] = timedelta(seconds=90)

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


class RolesSettings(Section):
    """``[roles]``: who may do what."""

    admins: tuple[ListedUserId, ...] = ()


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
            raise ValueError(f"expected one of {', '.join(allowed)}, got {show(value)}")
        return value


class ProviderSettings(Section):
    """One ``[[sso.providers]]`` table: an OpenID Connect provider, or GitHub (plain OAuth2)."""

    id: ProviderId
    name: str | None = None
    kind: Literal["oidc", "github"] = "oidc"
    # OIDC: the issuer URL; discovery is read from <issuer>/.well-known/openid-configuration.
    issuer: ProviderUrl | None = None
    client_id: str
    client_secret: Secret
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
    github_url: ProviderUrl = "https://github.com"
    github_api_url: ProviderUrl = "https://api.github.com"
    # OIDC: ask for offline_access (a refresh token, so groups can be read again later) when the
    # provider offers it.
    offline_access: bool = True
    # OIDC Back-Channel Logout (POST <public_url>/backchannel-logout): what a valid logout
    # token does to the member it names.
    backchannel_logout: Literal["ignore", "reset_role", "deactivate"] = "reset_role"

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

    link_ttl: Annotated[
        Duration, Field(ge=timedelta(minutes=1), le=timedelta(hours=24)),
        OutOfRange("must be between 1m and 24h"),
    ] = timedelta(minutes=10)  # fmt: skip
    providers: tuple[ProviderSettings, ...] = ()
    # How often every linked member's groups are read again from their provider (jittered,
    # in batches); 0s: never on a schedule (`!resync` still works).
    resync_interval: Annotated[
        Duration, Field(ge=timedelta(0), le=timedelta(days=7)),
        OutOfRange("must be between 0s and 7d"),
    ] = timedelta(hours=1)  # fmt: skip
    # The key refresh tokens are encrypted with at rest. Unset: one is made and kept in the data
    # dir (mode 0600); set it when several processes share the database.
    token_key: SecretStr | None = None

    @field_validator("token_key")
    @classmethod
    def _token_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_SESSION_SECRET:
            raise ValueError(
                f"must be at least {MIN_SESSION_SECRET} characters (e.g. `openssl rand -hex 32`)"
            )
        return value

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[str]:
        providers = values.get("providers")
        if not isinstance(providers, tuple):
            return []
        ids = [p.id for p in providers]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        return [f"providers: id {d!r} is used twice" for d in dupes]

    def provider(self, provider_id: str) -> ProviderSettings | None:
        return next((p for p in self.providers if p.id == provider_id), None)


class GptSettings(Section):
    """``[gpt]``: the GPT relay, through any OpenAI-compatible endpoint."""

    enabled: bool = True
    base_url: ApiUrl = "https://api.openai.com/v1"
    # Also read from OPENAI_API_KEY when neither api_key nor CB_GPT_API_KEY is set.
    api_key: SecretStr | None = None
    model: NonBlank = "gpt-4o-mini"
    temperature: Annotated[
        float, Field(ge=0, le=2), OutOfRange("expected a number from 0 to 2")
    ] = 0.7
    system_prompt: NonBlank = (
        "You are the assistant of a community chat on Matrix. Be friendly and concise, and answer "
        "in Markdown."
    )
    timeout: Annotated[float, Field(gt=0), OutOfRange("expected seconds above 0")] = 60.0
    max_retries: Count = 2
    stream: bool = True
    require_sso: bool = True
    # Tokens (prompt + answer) per user per UTC day; 0 means no limit.
    daily_token_quota: Count = 20000
    moderator_daily_token_quota: OptionalCount = None
    admin_daily_token_quota: OptionalCount = None
    # The longest answer asked of the model, in tokens (less when a member's quota leaves less).
    max_tokens: int = Field(default=1024, ge=16, le=200_000)
    history_token_budget: Annotated[
        int, Field(ge=200), OutOfRange("expected at least 200 tokens")
    ] = 3000
    summarize: bool = False
    history_retention_days: Count = 90
    # -- images and voice (bot/community/assistant_media.py); each is off until configured --
    # Models that accept images in a turn (vision); a room can also switch it on (`!gpt vision`).
    vision_models: tuple[str, ...] = ()
    # Images are downscaled to fit this many pixels on their longest side before the model sees
    # them, and each counts this many tokens against the history budget and the quota.
    image_max_side: int = Field(default=1024, ge=64, le=8192)
    image_token_cost: Count = 765
    # Media a member sends are refused above this size (declared or actual), and images above
    # this many pixels (a decompression bomb); downloads give up after `media_timeout`.
    media_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024)
    image_max_pixels: int = Field(default=40_000_000, ge=10_000, le=500_000_000)
    media_timeout: Duration = timedelta(seconds=30)
    # Voice in: "" switches it off; e.g. "whisper-1" (OpenAI), a faster-whisper model (LocalAI).
    transcription_model: str = ""
    audio_max_seconds: int = Field(default=300, ge=1, le=7200)
    # Voice (in and out) counts this many tokens per second against the quota.
    audio_token_cost_per_second: Count = 10
    # Voice out: answers also sent as a voice message made by `speech_model` ("" = off).
    speak_replies: bool = False
    speech_model: str = ""
    speech_voice: NonBlank = "alloy"
    speech_format: Literal["opus", "mp3", "aac", "flac", "wav"] = "opus"
    speech_max_chars: int = Field(default=4000, ge=100, le=4096)
    # Images out (`!image`): "" switches it off; e.g. "gpt-image-1" or "dall-e-3".
    image_model: str = ""
    image_size: NonBlank = "1024x1024"
    image_generation_token_cost: Count = 5000
    # -- catch-up summaries, room context, reasoning (bot/community/summaries.py, reasoning.py) --
    # `!summary` with no count reads this many messages; at most `summary_max_messages`.
    summary_default_messages: int = Field(default=50, ge=1, le=10_000)
    summary_max_messages: int = Field(default=500, ge=1, le=10_000)
    # What one summary may read back from the homeserver: events and characters of text.
    summary_max_events: int = Field(default=2000, ge=10, le=100_000)
    summary_max_chars: int = Field(default=200_000, ge=1000, le=10_000_000)
    # The summary's prompt holds the newest messages that fit this many tokens.
    summary_token_budget: Annotated[
        int, Field(ge=200), OutOfRange("expected at least 200 tokens")
    ] = 6000
    # Default of the room setting (`!gpt context N`): questions in a room see the last N messages
    # and answers stay in the room (0: no context, answers open threads).
    room_context_messages: int = Field(default=0, ge=0, le=200)
    # Default of the room setting (`!gpt reasoning show|hide`): a reasoning model's thinking is
    # shown folded above the answer; it is never part of the answer or the history.
    show_reasoning: bool = False


class WelcomeSettings(Section):
    """``[welcome]``: greeting newcomers in community rooms."""

    # Room ids or aliases; empty: welcome nowhere.
    rooms: tuple[ListedRoom, ...] = ()
    # Placeholders: {name} (display name), {mention} (a pill), {room} (room name), {login_hint}.
    message: str = "Welcome {mention} to {room}! {login_hint}"
    dm_unlinked: bool = True
    batch_window: Duration = timedelta(seconds=10)
    # A reminder DM to newcomers still unlinked after this long ("0s": never).
    reminder_after: Duration = timedelta(hours=24)

    @field_validator("message")
    @classmethod
    def _message(cls, value: str) -> str:
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


class AccessRoom(Section):
    """One ``[[access.rooms]]`` table: who may be in a room (or space)."""

    room: RoomRef
    # Members with any of these SSO groups, or any of these roles, belong in the room.
    groups: tuple[str, ...] = ()
    roles: tuple[Literal["user", "moderator", "admin"], ...] = ()

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[str]:
        if not values.get("groups") and not values.get("roles"):
            return ["give groups or roles (or both): who belongs in this room"]
        return []


class AccessSettings(Section):
    """``[access]``: rooms whose members follow their SSO groups or roles."""

    rooms: tuple[AccessRoom, ...] = ()


class SynapseSettings(Section):
    """``[synapse]``: the homeserver's admin API, for registration tokens (`!invite-token`)."""

    # A server admin's access token (the bot's own, if it is one). Unset: no invite tokens.
    admin_token: Secret | None = None


class MetricsSettings(Section):
    """``[metrics]``: Prometheus metrics on a listener of their own (bot/metrics.py)."""

    # host:port to serve GET /metrics on; unset (the default): no metrics, no listener.
    listen: Listen | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        return _split_listen(self.listen) if self.listen else None


class SchedulerSettings(Section):
    """``[scheduler]``: scheduled announcements and periodic jobs."""

    # The time zone `!schedule` times are written in (IANA name, e.g. Europe/Berlin).
    timezone: TimeZone = Field(default_factory=lambda: ZoneInfo("UTC"))
    # A run missed while the bot was down still fires on start if it is at most this late.
    missed_run_grace: Duration = timedelta(hours=1)


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
    access: AccessSettings = Field(default_factory=AccessSettings)
    synapse: SynapseSettings = Field(default_factory=SynapseSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    protections: ProtectionsSettings = Field(default_factory=ProtectionsSettings)
    source_path: Path | None = None


# The sections, by name, in validation order.
SECTIONS: dict[str, type[Section]] = {
    name: field.annotation
    for name, field in Config.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
}

# --------------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> Config:
    """Load and validate the configuration.

    ``path`` is the TOML file (``None``: environment and defaults only); ``env`` defaults to
    ``os.environ``. Raises :class:`ConfigError` listing every problem found.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    built, was_set, base = read_sections(SECTIONS, path, environ)
    # The default data dir is relative to the config file (or the working directory); the
    # default database lives in it; OPENAI_API_KEY (the OpenAI SDK's) is the key's last resort.
    if "dir" not in was_set["data"]:
        built["data"] = built["data"].model_copy(
            update={"dir": Path(os.path.normpath(base / built["data"].dir))}
        )
    if "url" not in was_set["database"]:
        db_url = f"sqlite+aiosqlite:///{(built['data'].dir / 'bot.db').as_posix()}"
        built["database"] = built["database"].model_copy(update={"url": db_url})
    if built["gpt"].api_key is None and environ.get("OPENAI_API_KEY"):
        api_key = SecretStr(environ["OPENAI_API_KEY"])
        built["gpt"] = built["gpt"].model_copy(update={"api_key": api_key})
    source_path = None if path is None else Path(os.path.abspath(Path(path).expanduser()))
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
    if isinstance(value, timedelta):
        return compact_duration(value, days=False)  # 24h stays 24h
    if isinstance(value, ZoneInfo):
        return value.key
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, BaseModel):
        return {key: _plain(getattr(value, key)) for key in type(value).model_fields}
    return value


def redacted_dict(config: Config) -> dict[str, Any]:
    """The configuration as plain data for display: secrets (when set) become ``"***"``, the
    password of the database URL too; paths, durations and zones are strings, lists are lists."""
    result: dict[str, Any] = {
        "source_path": str(config.source_path) if config.source_path else None
    }
    result.update({name: _plain(getattr(config, name)) for name in SECTIONS})
    result["database"]["url"] = _redact_url(config.database.url)
    return result
