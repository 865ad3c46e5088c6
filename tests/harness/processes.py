"""The harness's server processes. They are stopped when the test process ends — also on SIGTERM (e.g. an
expired `timeout pytest`), when atexit does not run: they live in their own sessions and would
outlive us."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
from pathlib import Path
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


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM the process group (the servers run in their own session), SIGKILL if it lingers."""
    if process is None or process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<{path} does not exist>"
    return "\n".join(text.splitlines()[-lines:]) or f"<{path} is empty>"


def spawn(
    owner: Stoppable, args: list[str], *, cwd: Path, output: Path, append: bool = False
) -> subprocess.Popen[bytes]:
    """Start a server process: stdout and stderr into `output` (appended, or truncated so a
    readiness line is looked up in this start's output only), in its own process group so
    terminate() signals exactly it, and stopped at exit with the rest (see track)."""
    with open(output, "ab" if append else "wb") as handle:  # the child keeps its own descriptor
        process = subprocess.Popen(
            args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=handle,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    track(owner)
    return process
