"""Ranks in the community: user < moderator < admin."""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    USER = 0
    MODERATOR = 1
    ADMIN = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: use user, moderator or admin") from None
