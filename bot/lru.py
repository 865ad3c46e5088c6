"""A dictionary that forgets its least recently used entries beyond a size: for per-member or
per-room memos (help already sent, joins seen, clients per model) that a crowd must not inflate."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUDict(OrderedDict[K, V], Generic[K, V]):
    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size

    def __getitem__(self, key: K) -> V:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.max_size:
            self.popitem(last=False)
