"""The cyclic garbage collector, paused while the bot starts.

Start-up imports some 150 modules and builds the mapped classes, the config models and the wired
services: hundreds of thousands of objects that live as long as the process. With the collector
on, each generation-2 pass walks all of them again, a third of the time spent building the store's
models alone. So `community-bot` pauses the collector before its imports and resumes it once the
bot is wired, first moving everything built so far into the permanent generation
(`gc.freeze()`), where later passes never look. Reference counting frees short-lived objects
meanwhile as always; only cycles wait for the collector to resume."""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Stop the collector until `resume()` (a no-op when it is already off)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze what exists now and start the collector again, if `pause()` stopped it."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
