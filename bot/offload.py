"""CPU-heavy work on long texts (parsing a 64 KiB command, rendering a long answer) runs in one
worker thread, so the event loop goes on answering everyone else meanwhile. Short texts are
handled inline: for them a thread hop would cost more than the work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

INLINE_CHARS = 2_000

_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="text-work")


async def off_loop(work: Callable[[], T], size: int) -> T:
    """`work()` for a text of `size` characters, where it cannot stall the event loop."""
    if size <= INLINE_CHARS:
        return work()
    return await asyncio.get_running_loop().run_in_executor(_worker, work)
