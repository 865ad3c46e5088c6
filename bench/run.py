"""`make bench`: every benchmark, one summary table, exit status 1 when a target is missed.

Each benchmark prints its own table and verdict as it finishes (prompt_budget first: it needs no
homeserver); the summary repeats the verdicts. See bench/README.md for how to read the ratios.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import chat_concurrency, e2ee_roundtrip, hostile_load, prompt_budget, welcome_burst
from bench.common import Outcome, report, table

BENCHMARKS = (prompt_budget, chat_concurrency, welcome_burst, e2ee_roundtrip, hostile_load)


def main() -> int:
    outcomes: list[tuple[Outcome, float]] = []
    for module in BENCHMARKS:
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

    rows = [
        (
            o.name,
            o.metric,
            "-" if o.value is None else f"{o.value:.3f}",
            f"<= {o.limit:.2f}",
            "PASS" if o.passed else "FAIL",
            f"{took:.0f} s",
        )
        for o, took in outcomes
    ]
    print("== summary ==")
    print(table(rows, ("benchmark", "ratio", "measured", "target", "verdict", "took")))
    for o, _ in outcomes:
        print(o.verdict)
    failed = [o.name for o, _ in outcomes if not o.passed]
    print(
        f"bench: {len(outcomes) - len(failed)} of {len(outcomes)} passed"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
