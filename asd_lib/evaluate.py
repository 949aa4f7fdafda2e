"""Command line: evaluate one submission folder as the organisers' evaluator does.

    python -m asd_lib.evaluate SUBMISSION_DIR [--ground-truth DIR | --data DIR] [--out result.csv] [--jackknife]
                               [--paper-style]

Prints the official score and summaries; writes the organisers' <system>_result.csv table to --out.
"""
from __future__ import annotations

import argparse
import json
import sys

from asd_lib import logs
from asd_lib.metrics import EvaluationError, atomic_write_text, evaluate_submission, format_summary, paper_style_scores


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status (2 on bad input)."""
    ap = argparse.ArgumentParser(prog="python -m asd_lib.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("submission_dir", help="folder with anomaly_score_* and decision_result_* CSVs")
    ap.add_argument("--ground-truth", default=None,
                    help="folder holding ground_truth_data/, ground_truth_domain/, ground_truth_attributes/ "
                         "(needed for eval-style names)")
    ap.add_argument("--data", default=None,
                    help="the data folder (dev_data/raw/...): without --ground-truth, each machine's file must score "
                         "exactly its test clips there; without either, the dev naming rule checks completeness")
    ap.add_argument("--out", default=None, help="where to write the organisers' result table (CSV)")
    ap.add_argument("--machines", nargs="*", default=None, help="evaluate only these machines")
    ap.add_argument("--no-ci", action="store_true", help="skip the evaluator's CI95 (leave-one-out) computation")
    ap.add_argument("--jackknife", action="store_true",
                    help="also print OUR textbook jackknife interval of the official score")
    ap.add_argument("--paper-style", action="store_true",
                    help="also print the paper's (AAU) metric, NOT the official score")
    ap.add_argument("--json", default=None, help="write all numbers as JSON here")
    args = ap.parse_args(argv)
    logs.configure()
    try:
        res = evaluate_submission(args.submission_dir, args.ground_truth, machines=args.machines,
                                  ci=not args.no_ci, jackknife_ours=args.jackknife, data=args.data)
    except (EvaluationError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cols = ["machine", "section", "AUC (source)", "AUC (target)", "pAUC"]
    print(res.table[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(format_summary(res))
    paper = None
    if args.paper_style:
        paper = paper_style_scores(res)
        print(f"  paper-style (AAU code, NOT official): Omega (14-number hmean, no eps floor) "
              f"{paper['omega_hmean14']:.6f}; mean AUC {paper['mean_auc']:.4f}, mean pAUC {paper['mean_pauc']:.4f}")
    if args.out:
        print(f"results -> {res.to_csv(args.out)}")
    if args.json:
        blob = {"official_score": res.official_score, "official_score_csv": res.official_score_csv,
                "paper_csv": res.paper_csv, "evaluator_ci": res.evaluator_ci, "jackknife_ours": res.jackknife_ours,
                "per_machine": res.table.to_dict(orient="records"), "paper_style_NOT_OFFICIAL": paper}
        atomic_write_text(args.json, json.dumps(blob, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
