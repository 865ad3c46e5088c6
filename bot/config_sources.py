"""Where the settings come from: a TOML file and ``CB_*`` environment variables, key by key.

Each key of a section is taken from the environment, else from the file; ``*_file`` secrets are
read; environment text is converted leniently (:func:`coerce`); then pydantic validates the section
and each of its errors becomes one line naming the dotted key and the source. Lines come in reading
order: unknown sections, then for each section its tables, unknown keys, unreadable values, invalid
values and checks across keys. Secret values never appear in them.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, SecretStr, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

ENV_PREFIX = "CB_"


class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one human-readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems)  # args stay picklable

    def __str__(self) -> str:
        return "\n".join(self.problems)


class Section(BaseModel):
    """Base class of the config sections: frozen, no unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[str]:
        """Checks involving several keys. ``values`` holds the keys that were set (after env
        overrides and ``*_file`` resolution, before validation). Return messages that are
        prefixed with the section name."""
        return []


class OutOfRange(NamedTuple):
    """Field metadata: what to say when a value breaks the field's ``Field(ge=..., le=...)``."""

    message: str


def show(value: object, limit: int = 60) -> str:
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


# --------------------------------------------------------------------------- one value

_Kind = Literal["text", "secret", "bool", "int", "float", "path", "list", "tables"]
_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "bool": TypeAdapter(bool), "int": TypeAdapter(int), "float": TypeAdapter(float),
    "list": TypeAdapter(list[str]),
}  # fmt: skip
_EXPECTED = {"bool": "true or false", "int": "an integer", "float": "a number"}
_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def _kind(field: FieldInfo) -> _Kind:
    """How a field's raw values are read, from its type (``X | None`` counts as ``X``)."""
    hint = field.annotation
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return "tables" if isinstance(item, type) and issubclass(item, Section) else "list"
    kinds: dict[object, _Kind] = {
        bool: "bool", int: "int", float: "float", SecretStr: "secret", Path: "path"
    }  # fmt: skip
    return kinds.get(hint, "text")


def coerce(kind: _Kind, value: object, from_env: bool, base_dir: Path) -> object:
    """A raw value as its field's kind expects it. TOML values must have the type already;
    environment text is read leniently (`` yes `` is true, a list is a JSON array or
    comma-separated). Relative paths resolve against ``base_dir``. Raises ValueError."""
    got = "" if kind == "secret" else f", got {show(value)}"
    if from_env and isinstance(value, str):
        if kind == "list" and value.strip().startswith("["):
            try:
                value = json.loads(value)
            except ValueError:
                message = "expected a JSON array of strings or a comma-separated list"
                raise ValueError(f"{message}{got}") from None
        elif kind == "list":
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif kind in _EXPECTED:
            value = value.strip()
    try:
        if kind in _ADAPTERS:
            return _ADAPTERS[kind].validate_python(value, strict=not from_env)
        if not isinstance(value, str):
            raise TypeError
    except (ValidationError, TypeError):
        expected = _EXPECTED.get(kind, "a list of strings" if kind == "list" else "a string")
        raise ValueError(f"expected {expected}{got}") from None
    if kind == "path":
        if not value.strip():
            raise ValueError("must not be empty")
        return Path(os.path.normpath(base_dir / Path(value).expanduser()))
    return value


def _read_secret_file(raw: object, base_dir: Path) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"expected a file path, got {show(raw)}")
    path = Path(os.path.normpath(base_dir / Path(raw).expanduser()))
    try:
        content = path.read_text(encoding="utf-8").rstrip()
    except FileNotFoundError:
        raise ValueError(f"file not found: {path}") from None
    except UnicodeDecodeError:
        raise ValueError(f"file is not valid UTF-8: {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not content:
        raise ValueError(f"file is empty: {path}")
    return content


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _suffix(label: str | None) -> str:
    return f" (from {label})" if label else ""


def _explain(error: Mapping[str, Any], model: type[Section], values: Mapping[str, object]) -> str:
    """A pydantic error as the rest of a problem line (after "section.key: ")."""
    if error["type"] == "missing":
        return "required"
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
    key = error["loc"][0]
    says = [m for m in model.model_fields[key].metadata if isinstance(m, OutOfRange)]
    if error["type"] in _RANGE_ERRORS and says:
        return f"{says[0].message}, got {show(values[key])}"
    return str(error["msg"])


# --------------------------------------------------------------------------- one section


class _Value(NamedTuple):
    value: object
    label: str  # where it came from, for messages: the env var, or the file as it was named
    from_env: bool


_INVALID = object()  # stands for a value that was set but could not be read


def _unknown_keys(
    name: str, model: type[Section], layers: Iterable[dict[str, _Value]]
) -> list[str]:
    """Lines for the keys the section does not have, with a did-you-mean."""
    kinds = {key: _kind(info) for key, info in model.model_fields.items()}
    secrets = sorted(key for key, kind in kinds.items() if kind == "secret")
    tables = [key for key, kind in kinds.items() if kind == "tables"]
    lines = []
    for layer in layers:
        for key, item in layer.items():
            base = key.removesuffix("_file")
            if key in kinds or (base != key and base in secrets):
                continue
            if item.from_env and any(key.startswith(f"{table}_") for table in tables):
                continue  # an env key of a table: see tables()
            if base != key and base in kinds:
                readable = " and ".join(secrets) or "no key of this section"
                hint = f" ({readable} can be read from a file, not {base})"
            else:
                hint = _suggest(key, [*kinds, *(f"{secret}_file" for secret in secrets)])
            where = _suffix(item.label if item.from_env else None)
            lines.append(f"{name}.{key}: unknown key{hint}{where}")
    return lines


def _validated(
    name: str, model: type[Section], values: dict[str, object], labels: dict[str, str]
) -> tuple[Section | None, list[tuple[int, str]]]:
    """The section validated by pydantic, or its errors as (field position, line)."""
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not _INVALID}), []
    except ValidationError as exc:
        position = {key: i for i, key in enumerate(model.model_fields)}
        reported = {key for key, value in values.items() if value is _INVALID}
        lines = []
        for error in exc.errors(include_url=False, include_input=False):
            key = str(error["loc"][0])
            if key not in reported:  # one line per key
                reported.add(key)
                line = f"{name}.{key}: {_explain(error, model, values)}{_suffix(labels.get(key))}"
                lines.append((position.get(key, 0), line))
        return None, lines


class _Reader(NamedTuple):
    file_base: Path  # what relative paths in the file resolve against
    cwd: Path  # and those in the environment

    def section(
        self, name: str, model: type[Section], file: dict[str, _Value], env: dict[str, _Value]
    ) -> tuple[Section | None, dict[str, object], list[str]]:
        """One section (or one table of it). Returns the section (None when invalid), the values
        that were set, and the problems."""
        found: list[tuple[int, int, str]] = []  # (reading order, field position, line)
        values: dict[str, object] = {}
        labels: dict[str, str] = {}
        for position, (key, info) in enumerate(model.model_fields.items()):
            kind = _kind(info)
            if kind == "tables":
                item_model = typing.get_args(info.annotation)[0]
                built, lines = self.tables(name, key, item_model, file.get(key), env)
                found += [(0, 0, line) for line in lines]
            else:
                built, labels[key], line = self.value(name, key, kind, file, env)
                if line:
                    found.append((2, position, line))
            if built is not None:
                values[key] = built
        found += [(1, 0, line) for line in _unknown_keys(name, model, (file, env))]
        section, invalid = _validated(name, model, values, labels)
        found += [(3, position, line) for position, line in invalid]
        found.sort(key=lambda problem: problem[:2])
        problems = [line for _, _, line in found]
        problems += [f"{name}: {message}" for message in model.cross_check(values)]
        return section, values, problems

    def value(
        self, name: str, key: str, kind: _Kind, file: dict[str, _Value], env: dict[str, _Value]
    ) -> tuple[object, str, str | None]:
        """One key's value (None when not set) from the environment or else the file, ``*_file``
        secrets read; with its source for messages, and a problem line when it cannot be read."""
        for layer in (env, file):
            plain = layer.get(key)
            from_file = layer.get(f"{key}_file") if kind == "secret" else None
            if plain is not None and plain.from_env and plain.value == "" and kind != "list":
                plain = None  # an empty env value is not set
            if from_file is not None and from_file.from_env and from_file.value == "":
                from_file = None
            if plain is not None and from_file is not None:
                where = f" (from {plain.label} and {from_file.label})" if plain.from_env else ""
                return (
                    _INVALID,
                    "",
                    f"{name}.{key}: set either {key} or {key}_file, not both{where}",
                )
            item = from_file or plain
            if item is None:
                continue
            base = self.cwd if item.from_env else self.file_base
            try:
                if item is from_file:
                    label = item.label if item.from_env else f"{key}_file in {item.label}"
                    return _read_secret_file(item.value, base), label, None
                return coerce(kind, item.value, item.from_env, base), item.label, None
            except ValueError as problem:
                used = f"{key}_file" if item is from_file else key
                return _INVALID, "", f"{name}.{used}: {problem}{_suffix(item.label)}"
        return None, "", None

    def tables(
        self,
        section: str,
        key: str,
        model: type[Section],
        raw: _Value | None,
        env: dict[str, _Value],
    ) -> tuple[object, list[str]]:
        """``[[section.key]]`` tables, each read like a section. The environment reaches a table
        by its ``id``: ``CB_SSO_PROVIDERS_<ID>_<KEY>``. Returns the tables (None when not
        written)."""
        tables = raw.value if raw is not None else []
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            return _INVALID, [f"{section}.{key}: expected tables written as [[{section}.{key}]]"]
        built, problems, claimed = [], [], set()
        for index, table in enumerate(tables):
            ident = table.get("id")
            own_env: dict[str, _Value] = {}
            if isinstance(ident, str):
                prefix = f"{key}_{ident.replace('-', '_').lower()}_"
                own_env = {
                    k.removeprefix(prefix): v for k, v in env.items() if k.startswith(prefix)
                }
                claimed.update(prefix + k for k in own_env)
            name = f"{section}.{key}[{ident if isinstance(ident, str) else index}]"
            file = {k: _Value(v, raw.label, False) for k, v in table.items()}  # type: ignore[union-attr]
            item, _, found = self.section(name, model, file, own_env)
            built.append(item)
            problems += found
        for name, item in env.items():
            if (name == key or name.startswith(f"{key}_")) and name not in claimed:
                problems.append(
                    f"{section}.{name}: no [[{section}.{key}]] has the id this names"
                    f"{_suffix(item.label)}"
                )
        if problems or None in built:
            return _INVALID, problems
        return (tuple(built) if raw is not None else None), problems


# --------------------------------------------------------------------------- the whole


def _read_toml(path: Path, display: str) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{display}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{display}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{display}: not valid UTF-8"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        what, _, where = str(exc).rpartition(" (at ")
        at = re.fullmatch(r"line (\d+), column (\d+)\)", where)
        problem = (
            f"invalid TOML at line {at[1]}: {what} (column {at[2]})"
            if at
            else f"invalid TOML at end of document: {what or where}"
        )
        raise ConfigError([f"{display}: {problem}"]) from None


def read_sections(
    sections: Mapping[str, type[Section]], path: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, dict[str, object]], Path]:  # fmt: skip
    """Every section read and validated. Returns them with the keys each had set and the
    directory that relative defaults resolve against; raises :class:`ConfigError` listing every
    problem found."""
    problems: list[str] = []
    file_layer: dict[str, dict[str, _Value]] = {name: {} for name in sections}
    env_layer: dict[str, dict[str, _Value]] = {name: {} for name in sections}
    reader = _Reader(Path.cwd(), Path.cwd())
    if path is not None:
        display = os.fspath(path)
        source = Path(os.path.abspath(Path(path).expanduser()))
        reader = reader._replace(file_base=source.parent)
        for name, table in _read_toml(source, display).items():
            if name not in sections:
                problems.append(f"{name}: unknown section{_suggest(name, sections)}")
            elif not isinstance(table, dict):
                problems.append(f"{name}: expected a table ([{name}])")
            else:
                file_layer[name] = {k: _Value(v, display, False) for k, v in table.items()}
    by_prefix = sorted(sections, key=len, reverse=True)  # CB_DATABASE_URL is not in [data]
    for var in sorted(environ):
        name = next((s for s in by_prefix if var.startswith(f"{ENV_PREFIX}{s.upper()}_")), None)
        if name is not None:
            key = var[len(ENV_PREFIX) + len(name) + 1 :].lower()
            env_layer[name][key] = _Value(environ[var], var, True)

    built: dict[str, Any] = {}
    was_set: dict[str, dict[str, object]] = {}
    for name, model in sections.items():
        built[name], was_set[name], found = reader.section(
            name, model, file_layer[name], env_layer[name]
        )
        problems += found
    if problems:
        raise ConfigError(problems)
    return built, was_set, reader.file_base
