"""`make bench`: every benchmark, one summary table, exit status 1 when a target is missed.

Each benchmark prints its own table and verdict as it finishes; the summary then shows one row per
figure, the measured value with its target beside it, in the order of issue #10's table first
(start-up, memory, command overhead, the assistant under load, member search, many rooms, burst
throughput), then the other benchmarks. See bench/README.md for how to read them.

``.venv/bin/python bench/run.py [module ...]`` runs only the named modules (e.g. ``startup
memory``), in the order given.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    burst_throughput,
    chat_concurrency,
    e2ee_roundtrip,
    flood_containment,
    hostile_load,
    many_rooms,
    member_search,
    memory,
    ping_echo,
    prompt_budget,
    startup,
    welcome_burst,
)
from bench.common import Outcome, machine, report, table

# Issue #10's table, in its order; then the rest.
BENCHMARKS = (
    startup, memory, ping_echo, chat_concurrency, member_search, many_rooms, burst_throughput,
    prompt_budget, welcome_burst, e2ee_roundtrip, hostile_load, flood_containment,
)  # fmt: skip


def _module_name(module: object) -> str:
    return getattr(module, "__name__", "").rsplit(".", 1)[-1]


def summary(outcomes: list[tuple[Outcome, float]]) -> str:
    """One row per figure: benchmark, figure, measured, target, verdict, how long it took."""
    rows = []
    for outcome, took in outcomes:
        for i, figure in enumerate(outcome.all_figures):
            if outcome.error is not None:
                verdict = "ERROR"
            elif figure.informative:
                verdict = "info"
            elif figure.met:
                verdict = "PASS"
            else:
                verdict = "FAIL"
            rows.append((
                outcome.name if i == 0 else "",
                figure.metric,
                figure.measured,
                figure.target,
                verdict,
                f"{took:.0f} s" if i == 0 else "",
            ))  # fmt: skip
    return table(rows, ("benchmark", "figure", "measured", "target", "verdict", "took"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "modules", nargs="*", metavar="module",
        help="run only these (" + ", ".join(_module_name(m) for m in BENCHMARKS) + ")",
    )  # fmt: skip
    args = parser.parse_args(argv)
    by_name = {_module_name(m): m for m in BENCHMARKS}
    unknown = [name for name in args.modules if name not in by_name]
    if unknown:
        parser.error(f"unknown benchmark module(s): {', '.join(unknown)}")
    chosen = [by_name[name] for name in args.modules] or list(BENCHMARKS)

    began = datetime.datetime.now(datetime.UTC)
    print(f"bench: {began:%Y-%m-%d %H:%M} UTC on {machine()}", flush=True)
    outcomes: list[tuple[Outcome, float]] = []
    for module in chosen:
        print(f"running {module.NAME} ...", flush=True)
        started = time.monotonic()
        try:
            outcome = module.run()
        except Exception as problem:  # run() reports its own errors; this is a last resort
            outcome = Outcome(
                module.NAME, "-", None, 0.0, error=f"{type(problem).__name__}: {problem}"
            )
        outcomes.append((outcome, time.monotonic() - started))
        print(report(outcome), end="\n\n", flush=True)

    print(f"== summary ({began:%Y-%m-%d} UTC, {machine()}) ==")
    print(summary(outcomes))
    for o, _ in outcomes:
        print(o.verdict)
    failed = [o.name for o, _ in outcomes if not o.passed]
    targeted = [(o, f) for o, _ in outcomes for f in o.all_figures if not f.informative]
    figures = len(targeted)
    missed = sum(1 for o, f in targeted if o.error or not f.met)
    print(
        f"bench: {len(outcomes) - len(failed)} of {len(outcomes)} benchmarks passed, "
        f"{figures - missed} of {figures} figures on target"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
