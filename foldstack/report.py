"""report stage: the OOF predictions as a terminal summary and as an HTML page with plots.

Reads  folds/<m>[/r<r>]/{manifest.json,oof.npy,test.npy,fold<k>.log}, data/processed/{train,test}.parquet,
       with --html-dir also ensemble[/r<r>]/leaderboard.json and <method>/{scores.json,oof.npy,test.npy},
       data/competition.yaml, --solution when the file exists, and the pseudo rounds' features/pseudo_r<r>.parquet
       and ensemble/r<r>/leaderboard.json
Writes prints per model: CV and per-fold scores, time, the most frequent confusions (single-label) or per-label F1
       (multi-label), the most confident mistakes; with --html-dir: <dir>/index.html + its PNGs (self-contained: no
       script, no external URL; every text from the data HTML-escaped)
Run    python -m foldstack.report folds/minilm_bilstm/manifest.json [...]   (--summary: one line per model)
       make report [ROUND=r]   (reports/index.html; round r: reports/r<r>/index.html)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score

from . import config
from .errors import one_line_errors
from .labels import label_matrix
from .metrics import decide


def summary_line(man: dict) -> str:
    folds = " ".join(f"{s:.4f}" for s in man["fold_scores"])
    return (f"{man['model']:<24} CV {man['metric']} {man['cv']:.4f}   folds {folds}   "
            f"{man['train_secs'] / 60:.1f} min")


def top_confusions(y: np.ndarray, pred: np.ndarray, classes: list[str], k: int = 8) -> list[str]:
    cm = confusion_matrix(y, pred, labels=np.arange(len(classes)))
    np.fill_diagonal(cm, 0)
    flat = np.argsort(-cm, axis=None)[:k]
    return [f"{cm.flat[i]:>6}  true {classes[i // len(classes)]} -> predicted {classes[i % len(classes)]}"
            for i in flat if cm.flat[i] > 0]


def confident_mistakes(y, oof: np.ndarray, texts: pd.Series, classes: list[str], k: int = 5) -> list[str]:
    pred = oof.argmax(1)
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-oof[wrong, pred[wrong]])][:k]
    return [f"  p={oof[i, pred[i]]:.3f} predicted {classes[pred[i]]}, true {classes[y[i]]}: "
            f"{texts.iloc[i][:100]!r}" for i in worst]


def describe(man: dict, oof: np.ndarray, train: pd.DataFrame) -> list[str]:
    classes = man["classes"]
    lines = [summary_line(man)]
    if man["task"] == "multilabel":
        y = label_matrix(train["labels"], len(classes))
        f1 = f1_score(y, decide(oof, True), average=None, zero_division=0)
        order = np.argsort(-y.sum(0))[:15]
        lines.append("  per-label F1 (15 most frequent): " +
                     ", ".join(f"{classes[j]} {f1[j]:.2f} (n={int(y[:, j].sum())})" for j in order))
        return lines
    y = train["label"].to_numpy()
    lines.append("  most frequent confusions:")
    lines += ["  " + c for c in top_confusions(y, oof.argmax(1), classes)]
    lines.append("  most confident mistakes:")
    lines += confident_mistakes(y, oof, train["text"], classes)
    return lines


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifests", nargs="+", help="folds/<m>/manifest.json of the members to report")
    ap.add_argument("--summary", action="store_true", help="one line per model")
    ap.add_argument("--train", default="data/processed/train.parquet", help="processed training rows")
    ap.add_argument("--html-dir", default=None, help="also write the HTML report here (index.html + PNGs)")
    ap.add_argument("--ensemble-dir", default="ensemble", help="the round's ensemble folder (leaderboard.json)")
    ap.add_argument("--ensemble-root", default="ensemble", help="round 0's ensemble folder (pseudo-label rounds)")
    ap.add_argument("--features", default="features", help="where pseudo_r<r>.parquet live")
    config.add_path_options(ap, "competition", "processed")
    ap.add_argument("--solution", default="data/solution.csv", help="test answers, used only if the file exists")
    args = ap.parse_args(argv)
    train = None if args.summary else pd.read_parquet(args.train)
    for path in args.manifests:
        man = json.loads(Path(path).read_text())
        if args.summary:
            print(summary_line(man))
        else:
            print("\n".join(describe(man, np.load(Path(path).parent / "oof.npy"), train)) + "\n")
    if args.html_dir:
        from .io import InputError
        from .report_html import write_report
        try:
            page = write_report(args, config.load(config.Competition, args.competition))
        except (InputError, config.ConfigError) as err:
            raise SystemExit(f"error: {err}") from None
        print(f"report: {page}")


if __name__ == "__main__":
    main()
