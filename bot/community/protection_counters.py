"""The counting behind the protections, pure and in memory: what each member and room did in the
last seconds, bounded however many members and rooms a raid brings. Time is passed in (seconds
on any monotonic clock), so every threshold is unit-tested without waiting."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from bot.lru import LRUDict

K = TypeVar("K", bound=Hashable)

TRACKED = 20_000  # members (or rooms) remembered at once; the least recent are forgotten


class SlidingWindow(Generic[K]):
    """How many things happened per key within the last `window` seconds, with the items
    (event ids) that happened, so the ones over a limit can be redacted."""

    def __init__(self, max_keys: int = TRACKED, max_items: int = 1000) -> None:
        self._seen: LRUDict[K, deque[tuple[float, str]]] = LRUDict(max_keys)
        self._max_items = max_items

    def add(self, key: K, now: float, window: float, item: str = "") -> int:
        """Record one at `now`; the count within the window, this one included."""
        times = self._seen.get(key)
        if times is None:
            times = self._seen[key] = deque(maxlen=self._max_items)
        else:
            self._seen.move_to_end(key)
        times.append((now, item))
        while times and times[0][0] <= now - window:
            times.popleft()
        return len(times)

    def items(self, key: K) -> list[str]:
        return [item for _, item in self._seen.get(key, ()) if item]

    def reset(self, key: K) -> None:
        self._seen.pop(key, None)


class SpreadTracker:
    """The same text from one member in several rooms: per (member, text digest), the rooms it
    was posted in and when."""

    def __init__(self, max_keys: int = TRACKED) -> None:
        self._posts: LRUDict[tuple[str, bytes], dict[str, tuple[float, str]]] = LRUDict(max_keys)

    @staticmethod
    def digest(text: str) -> bytes:
        normal = " ".join(text.lower().split())
        return hashlib.blake2b(normal.encode(), digest_size=16).digest()

    def add(
        self, member: str, text: str, room_id: str, event_id: str, now: float, window: float
    ) -> dict[str, str]:
        """Record the post; the rooms (-> event id) it was posted in within the window."""
        key = (member, self.digest(text))
        rooms = self._posts.get(key)
        if rooms is None:
            rooms = self._posts[key] = {}
        else:
            self._posts.move_to_end(key)
        rooms[room_id] = (now, event_id)
        for room in [r for r, (at, _) in rooms.items() if at <= now - window]:
            del rooms[room]
        return {room: event for room, (_, event) in rooms.items()}

    def reset(self, member: str, text: str) -> None:
        self._posts.pop((member, self.digest(text)), None)


class Arrivals:
    """When each member joined each room (recently), to tell new joiners apart."""

    def __init__(self, max_keys: int = TRACKED) -> None:
        self._joined: LRUDict[tuple[str, str], float] = LRUDict(max_keys)

    def joined(self, room_id: str, member: str, now: float) -> None:
        self._joined[(room_id, member)] = now

    def is_new(self, room_id: str, member: str, now: float, period: float) -> bool:
        at = self._joined.get((room_id, member))
        return at is not None and now - at < period


class Offences:
    """How often a member has offended against a protection lately: the step of the escalation
    ladder their next offence gets."""

    def __init__(self, max_keys: int = TRACKED) -> None:
        self._times: LRUDict[tuple[str, str], list[float]] = LRUDict(max_keys)

    def record(self, member: str, protection: str, now: float, memory: float) -> int:
        """Count this offence; returns which one it is (1 for the first within `memory`)."""
        key = (member, protection)
        times = [t for t in self._times.get(key, []) if t > now - memory]
        times.append(now)
        self._times[key] = times[-50:]
        return len(times)

    def forget(self, member: str) -> None:
        for key in [k for k in self._times if k[0] == member]:
            del self._times[key]


def step(actions: tuple[str, ...], offence: int) -> str:
    """The action for the n-th offence: the ladder's n-th step, its last one beyond."""
    return actions[min(offence, len(actions)) - 1]
