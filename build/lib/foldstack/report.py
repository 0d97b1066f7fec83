"""report: a readable summary of models' OOF predictions, for a human checking them.

Reads  folds/<m>/manifest.json + oof.npy, data/processed/train.parquet
Writes nothing; prints per model: CV and per-fold scores, time, the most frequent confusions (single-label) or
       per-label F1 (multi-label), and the most confident mistakes with a snippet of their text
Run    python -m foldstack.report folds/minilm_bilstm/manifest.json [...]   (--summary: one line per model)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score

from .folds import label_matrix
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifests", nargs="+")
    ap.add_argument("--summary", action="store_true", help="one line per model")
    ap.add_argument("--train", default="data/processed/train.parquet")
    args = ap.parse_args(argv)
    train = None if args.summary else pd.read_parquet(args.train)
    for path in args.manifests:
        man = json.loads(Path(path).read_text())
        if args.summary:
            print(summary_line(man))
        else:
            print("\n".join(describe(man, np.load(Path(path).parent / "oof.npy"), train)) + "\n")


if __name__ == "__main__":
    main()
