"""Commands are declared once — name, aliases, arguments, required role, help — and everything else
(parsing, permission checks, help text, suggestions, the README reference) is derived from that."""

from __future__ import annotations

import difflib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from bot import matrix_ids
from bot.community.markdown import quoted, shorten
from bot.community.roles import Role

if TYPE_CHECKING:
    from bot.commands.context import CommandContext
    from bot.commands.reply import Reply


class Kind(Enum):
    WORD = "word"  # one token (`convert` may turn it into something else)
    TEXT = "text"  # the rest of the line, as typed
    INT = "int"
    USER = "user"  # an MXID, or a mention pill to one
    ROOM = "room"  # a room id or alias
    CHOICE = "choice"
    RAW = "raw"  # a stretch of words that `take` reads and says how many it used


# Reads an argument from the words left; returns its value and how many words it took.
Taker = Callable[[list[str]], tuple[Any, int]]


@dataclass(frozen=True)
class Arg:
    name: str
    kind: Kind = Kind.WORD
    required: bool = True
    help: str = ""
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    convert: Callable[[str], Any] | None = None  # a WORD's own parser (raises UsageError)
    take: Taker | None = None  # for RAW (raises UsageError)
    missing: str | None = None  # what to say when a required argument is absent

    def usage(self) -> str:
        if self.kind is Kind.CHOICE:
            inner = "|".join(self.choices)
        elif self.metavar:
            inner = self.metavar
        elif self.kind is Kind.USER:
            inner = "@user"
        elif self.kind is Kind.ROOM:
            inner = "#room|!id"
        else:
            inner = self.name
        if self.kind is Kind.TEXT:
            inner += "…"
        return f"<{inner}>" if self.required else f"[{inner}]"


@dataclass(frozen=True)
class Flag:
    """`--name` alone (a switch) or `--name VALUE`."""

    name: str
    kind: Kind | None = None  # None for a switch
    help: str = ""

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")

    def usage(self) -> str:
        if self.kind is None:
            return f"[--{self.name}]"
        metavar = {Kind.ROOM: "#room|!id", Kind.USER: "@user"}.get(self.kind, self.name)
        return f"[--{self.name} <{metavar}>]"


Handler = Callable[["CommandContext", "Args"], Awaitable["Reply"]]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    help: str
    role: Role = Role.USER
    args: tuple[Arg, ...] = ()
    flags: tuple[Flag, ...] = ()
    aliases: tuple[str, ...] = ()
    area: str = "general"
    details: str = ""
    # Admin commands are confined to [matrix] admin_room when one is configured.
    admin_room_only: bool | None = None
    # Deactivated users may still run these (help, whoami).
    allowed_when_inactive: bool = False
    # The services (bot/commands/services.py) the handler may use; it sees no others.
    uses: frozenset[str] = frozenset()

    @property
    def confined_to_admin_room(self) -> bool:
        return self.role is Role.ADMIN if self.admin_room_only is None else self.admin_room_only

    def usage(self, prefix: str) -> str:
        parts = [
            f"{prefix}{self.name}",
            *(a.usage() for a in self.args),
            *(f.usage() for f in self.flags),
        ]
        return " ".join(parts)


class Args(dict[str, Any]):
    """Parsed arguments; `args.user` and `args["user"]` both work."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class UsageError(Exception):
    """The arguments do not fit the command; the message says why."""


_MXID = matrix_ids.USER_ID
# Room ids lost their :server part in room version 12 (opaque hashes); aliases keep it.
_ROOM = matrix_ids.ROOM
_PILL = re.compile(r"^https://matrix\.to/#/(@[^/?\s]+)")


def parse_user(token: str) -> str:
    candidate = token
    pill = _PILL.match(token)
    if pill:
        candidate = pill.group(1).replace("%40", "@").replace("%3A", ":")
    if not _MXID.match(candidate):
        raise UsageError(f"{quoted(token)} is not a Matrix user ID (like @alice:example.org)")
    return candidate


def parse_room(token: str) -> str:
    if not _ROOM.match(token):
        raise UsageError(f"{quoted(token)} is not a room ID or alias (like #general:example.org)")
    return token


def _convert(kind: Kind, name: str, token: str, choices: tuple[str, ...]) -> Any:
    """A flag's value, or a positional argument without its own `convert`."""
    if kind is Kind.INT:
        try:
            return int(token)
        except ValueError:
            raise UsageError(f"{name} must be a whole number, not {quoted(token)}") from None
    if kind is Kind.USER:
        return parse_user(token)
    if kind is Kind.ROOM:
        return parse_room(token)
    if kind is Kind.CHOICE:
        lowered = token.lower()
        if lowered not in choices:
            raise UsageError(f"{name} must be one of {', '.join(choices)}, not {quoted(token)}")
        return lowered
    return token


@dataclass(slots=True)
class _Token:
    text: str
    start: int  # span of the token in the argument text
    end: int


_QUOTE_OR_ESCAPE = re.compile(r'["\\]')
_WORD = re.compile(r"\S+")


def _closing_quote(text: str, start: int) -> int:
    """Where the quoted string opened at `start` ends, or -1: a backslash escapes the next
    character (not a line break); a backslash before a line break, or the end of the text,
    means it is not a quoted string after all."""
    i = start + 1
    while (found := _QUOTE_OR_ESCAPE.search(text, i)) is not None:
        at = found.start()
        if text[at] == '"':
            return at
        if at + 1 >= len(text) or text[at + 1] == "\n":
            return -1
        i = at + 2
    return -1


def _tokenize(text: str) -> list[_Token]:
    """Words, or "quoted strings" (with \\" inside), in time linear in the text: a quoted
    string that fails to close stops at a point no later quoted string can start before, so no
    stretch of the text is searched twice."""
    if '"' not in text:
        return [_Token(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
    tokens = []
    i = 0
    while (word := _WORD.search(text, i)) is not None:
        i = word.start()
        if text[i] == '"' and (end := _closing_quote(text, i)) >= 0:
            tokens.append(_Token(text[i + 1 : end].replace('\\"', '"'), i, end + 1))
            i = end + 1
            continue
        tokens.append(_Token(word.group(), i, word.end()))
        i = word.end()
    return tokens


def _raw_text(text: str, start: int, cut: list[tuple[int, int]]) -> str:
    """The line from `start` on, as typed (newlines kept), without the option spans in `cut`;
    where a span was cut out, the text on either side is joined by one space."""
    pieces, pos = [], start
    for a, b in sorted(c for c in cut if c[0] >= start):
        pieces.append(text[pos:a])
        pos = b
    pieces.append(text[pos:])
    if len(pieces) == 1:
        return pieces[0].strip()
    trimmed = [
        pieces[0].rstrip(" \t"),
        *(p.strip(" \t") for p in pieces[1:-1]),
        pieces[-1].lstrip(" \t"),
    ]
    return " ".join(p for p in trimmed if p).strip()


def parse_arguments(command: Command, text: str) -> Args:
    """Bind the text after the command name to its declared arguments and options.

    Options (`--room X`, `--yes`) may stand anywhere; a free-text argument takes the rest of
    the line as typed, so multi-line announcements keep their shape.
    """
    tokens = _tokenize(text)
    args = Args({f.key: (False if f.kind is None else None) for f in command.flags})
    flags = {f"--{f.name}": f for f in command.flags}
    has_text = any(a.kind is Kind.TEXT for a in command.args)
    positional: list[_Token] = []
    cut: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        flag = flags.get(tok.text.lower()) if tok.text.startswith("--") else None
        if flag is not None:
            if flag.kind is None:
                args[flag.key] = True
                cut.append((tok.start, tok.end))
            else:
                if i + 1 >= len(tokens):
                    raise UsageError(f"{shorten(tok.text, 40)} needs a value")
                i += 1
                args[flag.key] = _convert(flag.kind, tok.text, tokens[i].text, ())
                cut.append((tok.start, tokens[i].end))
        elif tok.text.startswith("--") and len(tok.text) > 2 and not has_text:
            raise UsageError(f"unknown option {shorten(tok.text, 40)}")
        else:
            positional.append(tok)
        i += 1

    cursor = 0  # the next positional token to bind
    for arg in command.args:
        rest = positional[cursor:]
        if arg.kind is Kind.TEXT:
            value = _raw_text(text, rest[0].start, cut) if rest else ""
            if not value and arg.required:
                raise UsageError(arg.missing or f"missing {arg.name}")
            args[arg.name] = value or None
            return args
        if arg.kind is Kind.RAW:
            assert arg.take is not None, f"{arg.name}: a RAW argument needs `take`"
            args[arg.name], used = arg.take([t.text for t in rest])
            cursor += used
        elif rest:
            token = rest[0].text
            args[arg.name] = (
                arg.convert(token)
                if arg.convert
                else _convert(arg.kind, arg.name, token, arg.choices)
            )
            cursor += 1
        elif arg.required:
            raise UsageError(arg.missing or f"missing {arg.name}")
        else:
            args[arg.name] = None
    if cursor < len(positional):
        extra = " ".join(t.text for t in positional[cursor:])
        raise UsageError(f"unexpected {quoted(extra)}")
    return args


@dataclass
class Registry:
    """One command area's commands; `uses` names the services its handlers may use."""

    uses: Iterable[str] = ()
    commands: dict[str, Command] = field(default_factory=dict)
    _lookup: dict[str, Command] = field(default_factory=dict)

    def add(self, command: Command) -> Command:
        for key in (command.name, *command.aliases):
            if key in self._lookup:
                raise ValueError(f"command name {key!r} declared twice")
            self._lookup[key] = command
        self.commands[command.name] = command
        return command

    def command(
        self,
        name: str,
        *,
        help: str,
        role: Role = Role.USER,
        args: Iterable[Arg] = (),
        flags: Iterable[Flag] = (),
        aliases: Iterable[str] = (),
        area: str = "general",
        details: str = "",
        admin_room_only: bool | None = None,
        allowed_when_inactive: bool = False,
        uses: Iterable[str] = (),
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(
                Command(
                    name=name,
                    handler=handler,
                    help=help,
                    role=role,
                    args=tuple(args),
                    flags=tuple(flags),
                    aliases=tuple(aliases),
                    area=area,
                    details=details,
                    admin_room_only=admin_room_only,
                    allowed_when_inactive=allowed_when_inactive,
                    uses=frozenset([*self.uses, *uses]),
                )
            )
            return handler

        return register

    def resolve(self, name: str) -> Command | None:
        return self._lookup.get(name.lower())

    def visible_to(self, role: Role) -> list[Command]:
        return [c for c in self.commands.values() if c.role <= role]

    def suggest(self, name: str, role: Role) -> str | None:
        names = [key for key, c in self._lookup.items() if c.role <= role]
        close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.6)
        return self._lookup[close[0]].name if close else None

    def areas(self) -> list[str]:
        return list(dict.fromkeys(c.area for c in self.commands.values()))


def merge(*registries: Registry) -> Registry:
    combined = Registry()
    for registry in registries:
        for command in registry.commands.values():
            combined.add(command)
    return combined
