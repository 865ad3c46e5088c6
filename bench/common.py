"""What every benchmark shares: the repository on sys.path, a result type and table printing.

Benchmarks report ratios measured in one run (the bot against a baseline taken on the same machine
in the same run), never absolute times, so they hold on a slow laptop as on a fast CI runner."""

from __future__ import annotations

import logging
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@dataclass
class Outcome:
    """One benchmark's verdict: ``value`` (a ratio) against ``limit``, and the numbers behind it."""

    name: str
    metric: str  # what `value` is, e.g. "all-50 / single"
    value: float | None  # None: the benchmark could not measure (an error)
    limit: float
    details: list[tuple[str, str]] = field(default_factory=list)  # (measure, value) rows
    notes: list[str] = field(default_factory=list)
    extra_checks: list[tuple[str, bool]] = field(default_factory=list)  # must all hold too
    error: str | None = None

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and self.value is not None
            and self.value <= self.limit
            and all(ok for _, ok in self.extra_checks)
        )

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return f"FAIL {self.name}: error: {self.error}"
        failed = [what for what, ok in self.extra_checks if not ok]
        word = "PASS" if self.passed else "FAIL"
        line = f"{word} {self.name}: {self.metric} = {self.value:.3f} (target <= {self.limit:.2f})"
        if failed:
            line += "; also failed: " + ", ".join(failed)
        return line


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Left-aligned text columns, numbers right-aligned."""
    all_rows = [list(header)] if header else []
    all_rows += [list(r) for r in rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(all_rows[0]))]

    def fmt(row: list[str]) -> str:
        cells = []
        for i, cell in enumerate(row):
            numeric = cell[:1].isdigit() or (cell[:1] in "-+." and cell[1:2].isdigit())
            cells.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        return "  ".join(cells).rstrip()

    lines = []
    if header:
        lines.append(fmt(all_rows[0]))
        lines.append("  ".join("-" * w for w in widths))
        all_rows = all_rows[1:]
    lines.extend(fmt(r) for r in all_rows)
    return "\n".join(lines)


def report(outcome: Outcome) -> str:
    """The benchmark's own table, its notes and its one-line verdict."""
    parts = [f"== {outcome.name} ==", table(outcome.details, ("measure", "value"))]
    parts.extend(f"note: {n}" for n in outcome.notes)
    parts.append(outcome.verdict)
    return "\n".join(parts)


def seconds(value: float) -> str:
    return f"{value:.3f} s"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` from 0 to 100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def quiet_logging() -> None:
    """The bot's structlog output at warning and above only, on stderr (benchmark output stays
    readable); libraries likewise."""
    from bot.logging import configure_logging

    configure_logging("warning")
    logging.getLogger("nio").setLevel(logging.ERROR)
