"""The grammar of Matrix identifiers, one for the config file and for command arguments.

Every pattern is anchored at both ends and limits the whole id to 255 characters, so
``PATTERN.match(text)`` is the complete check."""

from __future__ import annotations

import re

MAX_LENGTH = 255
_LIMIT = rf"(?=.{{1,{MAX_LENGTH}}}\Z)"  # "." stops at a newline, so none gets through
_SERVER_NAME = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?"

SERVER_NAME = re.compile(rf"\A{_LIMIT}{_SERVER_NAME}\Z")
USER_ID = re.compile(rf"\A{_LIMIT}@[^\s:]+:{_SERVER_NAME}\Z")
# Aliases are #name:server; room ids are !opaque:server, or !opaque alone from room version 12 on.
ROOM = re.compile(rf"\A{_LIMIT}(?:[!#][^\s:]+:{_SERVER_NAME}|![A-Za-z0-9_\-+/=]+)\Z")


def is_user_id(text: str) -> bool:
    """@localpart:server, e.g. @alice:example.org."""
    return USER_ID.match(text) is not None


def is_server_name(text: str) -> bool:
    """example.org, example.org:8448, [::1]:8448."""
    return SERVER_NAME.match(text) is not None


def is_room(text: str) -> bool:
    """A room id (!abc:example.org, or !abc alone) or an alias (#room:example.org)."""
    return ROOM.match(text) is not None
