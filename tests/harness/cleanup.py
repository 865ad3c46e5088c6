"""Servers the harness started are stopped when the test process ends — also on SIGTERM (e.g. an
expired `timeout pytest`), when atexit does not run: they live in their own sessions and would
outlive us."""

from __future__ import annotations

import atexit
import os
import signal
import threading
from typing import Any, Protocol


class Stoppable(Protocol):
    def stop(self) -> None: ...


_running: set[Stoppable] = set()
_lock = threading.Lock()
_sigterm_installed = False


def stop_all() -> None:
    with _lock:
        servers = list(_running)
    for server in servers:
        try:
            server.stop()
        except Exception:  # noqa: S110 - best effort while exiting
            pass


def _install_sigterm_handler() -> None:
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or not (previous is signal.SIG_DFL or callable(previous)):
        return

    def handler(signum: int, frame: Any) -> None:
        stop_all()
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
    _sigterm_installed = True


def track(server: Stoppable) -> None:
    _install_sigterm_handler()
    with _lock:
        _running.add(server)


def untrack(server: Stoppable) -> None:
    with _lock:
        _running.discard(server)


atexit.register(stop_all)
