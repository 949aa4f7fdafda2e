"""Per-stage times of the last runner invocation against the demo budget (docs/design.md "Budgets").

    python benchmarks/bench_run.py                      # reads results/*/timings.csv (the last `make demo`)
    python benchmarks/bench_run.py --results results/smoke --budget 600

Prints the stages that ran, their seconds, the total and the budget; exits 1 when the total is over budget.
The runner writes the time table of each invocation to results/<system>/timings.csv.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results", help="results_dir of the run")
    ap.add_argument("--budget", type=float, default=900.0, help="seconds allowed for the whole run (demo: 15 min)")
    args = ap.parse_args()
    files = sorted(Path(args.results).glob("*/timings.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        print(f"no timings.csv under {args.results}/*/: run python -m asd_lib.run first", file=sys.stderr)
        return 2
    t = pd.read_csv(files[-1])  # every system of one invocation holds the same table; take the newest
    ran = t[t["status"] == "ran"]
    by_stage = ran.groupby("stage", sort=False)["seconds"].agg(["count", "sum"]).rename(columns={"sum": "seconds"})
    print(f"timings from {files[-1]}")
    print(by_stage.round(1).to_string())
    total = float(t["seconds"].sum())
    print(f"total {total:.1f} s over {len(ran)} executed stages ({(t['status'] == 'reused').sum()} reused); "
          f"budget {args.budget:.0f} s: {'OK' if total <= args.budget else 'OVER'}")
    return 0 if total <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
