"""The paired and unpaired 1-SE rules, and the evidence verdict, on recorded fold scores.

    .venv/bin/python benchmarks/paired_from_scores.py RUN/tune.json
    .venv/bin/python benchmarks/paired_from_scores.py --scores "0:0.250,0.295,0.084" ...

Reads the complete trials' fold scores from a tune.json (or takes them on the command line,
lambda:score,score,...), and prints per lambda the mean paired difference from lambda.min
with its corrected SE and 95% interval, both rules' lambda.1se, and what the evidence can
claim. No training: it re-reads numbers a tune already measured.
"""

from __future__ import annotations

import argparse
import json

from segdecay.studies.tune.evidence import assess, rules_sentence
from segdecay.studies.tune.selection import select_lambda, select_paired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tune_json", nargs="?")
    parser.add_argument("--scores", nargs="*", default=[], metavar="LAMBDA:S1,S2,...")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--groups", type=int, help="groups in the training split")
    args = parser.parse_args()
    folds, groups, distinct, repeats = args.folds, args.groups, None, 1
    scores: dict[float, list[float]] = {}
    if args.tune_json:
        payload = json.load(open(args.tune_json))
        folds, repeats = payload["folds"], payload["repeats"]
        groups, distinct = payload.get("groups"), payload.get("distinct_fold_assignments")
        scores = {t["weight_decay"]: t["fold_scores"] for t in payload["trials"]
                  if t["state"] == "COMPLETE"}
    for item in args.scores:
        lam, values = item.split(":")
        scores[float(lam)] = [float(v) for v in values.split(",")]
    unpaired, paired = select_lambda(scores), select_paired(scores, folds)
    print(f"{'lambda':>8} {'mean diff':>10} {'corr. SE':>9} {'naive SE':>9} {'95% interval':>20}")
    for p in paired["points"]:
        print(f"{p.lam:>8g} {p.mean_diff:>+10.4f} {p.se:>9.4f} {p.se_naive:>9.4f} "
              f"[{p.ci_low:+.4f}, {p.ci_high:+.4f}]")
    print(f"lambda.min {paired['lambda_min']:g}; lambda.1se paired {paired['lambda_1se']:g}, "
          f"unpaired {unpaired['lambda_1se']:g}")
    verdict = assess(paired["points"], paired["lambda_min"], folds, repeats, groups, distinct)
    for line in (rules_sentence(paired["lambda_1se"], unpaired["lambda_1se"],
                                paired["points"], unpaired["best_se"]),
                 verdict["sentence"], verdict["recommendation"]):
        if line:
            print(line)


if __name__ == "__main__":
    main()
