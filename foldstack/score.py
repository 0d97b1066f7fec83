"""score: a submission against a solution file (same format as the sample), with the competition's metric.

Reads  a submission CSV, a solution CSV (never read by any training stage), data/processed/classes.json,
       data/competition.yaml
Writes nothing; prints one line (and --json: the score as JSON on stdout)
Run    python -m foldstack.score --submission=submissions/mean.csv --solution=data/solution.csv

Label-format submissions are scored on their labels (log_loss needs per-class probability columns).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pandas as pd

from . import config, metrics
from .errors import one_line_errors
from .io import InputError, read_table
from .labels import classes_json, label_y


def unseen_labels(sol: pd.DataFrame, classes: list[str], comp: config.Competition) -> list[str]:
    """Labels of a label-format solution that training never saw (no model can predict them)."""
    cols = [c for c in sol.columns if c != comp.id]
    if len(cols) != 1 or comp.submission_values == "probability":
        return []  # per-class columns: the column set is the class list
    cells = sol[cols[0]].fillna("").astype(str)
    found = {lab for cell in cells for lab in (cell.split(comp.label_sep) if comp.multilabel else [cell]) if lab}
    return sorted(found - set(classes))


def score_files(sub_path, sol_path, comp: config.Competition, classes: list[str]) -> float:
    """The metric of a submission against a solution. A solution label never seen in training is a class of its
    own that every prediction misses, as on the leaderboard (it counts in macro F1 with F1 0); reported on stderr."""
    sol = read_table(sol_path, ",", [comp.id])
    sub = read_table(sub_path, ",", [comp.id])
    sub = sub.set_index(comp.id).reindex(sol[comp.id]).reset_index()
    missing = sub.drop(columns=comp.id).isna().all(axis=1).to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise InputError(f"{sub_path}: column {comp.id!r}: solution id {sol[comp.id].iloc[i]!r} "
                         f"(solution row {i + 2}) has no row in the submission")
    unseen = unseen_labels(sol, classes, comp)
    if unseen:
        report_unseen(sol_path, unseen, comp)
    y = label_y(sol, classes + unseen, comp, sol_path)
    pred = label_y(sub, classes, comp, sub_path)
    if pred.ndim == 2 and not comp.multilabel:  # per-class probabilities
        return metrics.score(comp.metric, y.argmax(1) if y.ndim == 2 else y, widen(pred, len(unseen)), False)
    if comp.metric == "log_loss":
        raise InputError(f"{sub_path}: log_loss needs probabilities; this submission holds labels")
    if comp.multilabel:
        return metrics.score(comp.metric, y, widen(pred, len(unseen)), True)
    onehot = np.eye(len(classes) + len(unseen))[pred]
    return metrics.score(comp.metric, y, onehot, False)


def widen(pred: np.ndarray, extra: int) -> np.ndarray:
    """Zero columns for the unseen classes: nothing predicts them."""
    return np.hstack([pred, np.zeros((len(pred), extra))]) if extra else pred


_reported: set = set()


def report_unseen(sol_path, unseen: list[str], comp: config.Competition) -> None:
    if comp.metric == "log_loss":
        raise InputError(f"{sol_path}: label {unseen[0]!r} never occurs in training; log_loss cannot score it")
    if str(sol_path) not in _reported:  # once per solution file, though every blend is scored against it
        _reported.add(str(sol_path))
        print(f"note: {sol_path}: {len(unseen)} label(s) never seen in training ({', '.join(unseen[:5])}"
              f"{', ...' if len(unseen) > 5 else ''}): scored as misses", file=sys.stderr)


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--submission", required=True, help="the submission CSV to score")
    ap.add_argument("--solution", required=True, help="the test answers, in the sample's format")
    config.add_path_options(ap, "competition", "processed")
    ap.add_argument("--json", action="store_true", help="print {metric, score} as JSON")
    args = ap.parse_args(argv)
    comp = config.load(config.Competition, args.competition)
    classes = classes_json(args.processed)["classes"]
    value = score_files(args.submission, args.solution, comp, classes)
    if args.json:
        print(json.dumps({"submission": args.submission, "metric": comp.metric, "score": value}))
    else:
        print(f"score: {args.submission}  test {comp.metric} {value:.4f}")


if __name__ == "__main__":
    main()
