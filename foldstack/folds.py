"""folds stage: assign every original training row to one validation fold, once.

Reads  data/processed/train.parquet, data/competition.yaml (n_folds, seed, task, group)
Writes folds/folds.csv   id, fold   (row order of train.parquet)
Run    python -m foldstack.folds --competition=data/competition.yaml --train=data/processed/train.parquet \
           --out=folds/folds.csv

StratifiedKFold for single-label tasks, StratifiedGroupKFold when a group column is set (a group never straddles
folds), MultilabelStratifiedKFold (iterative stratification) for multi-label. All shuffled with the seed, so the
same config always gives the same folds. Augmented and pseudo-labelled rows never get a fold of their own: an
augmented row trains only folds where its source row is on the training side (see `training_mask`), a pseudo-labelled
test row only the student fold it was labelled for (foldstack.pseudo); neither is ever validated.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import config
from .errors import one_line_errors
from .io import InputError, save_csv
from .labels import label_matrix


def read_fold_ids(folds_csv, train_ids: pd.Series) -> np.ndarray:
    """folds.csv -> fold per row of train.parquet; InputError if the two disagree (stale folds)."""
    folds = pd.read_csv(folds_csv, dtype={"id": str})
    if len(folds) != len(train_ids) or not (folds["id"].to_numpy() == train_ids.astype(str).to_numpy()).all():
        raise InputError(f"{folds_csv} does not match the processed train rows; re-run `make folds/folds.csv`")
    return folds["fold"].to_numpy()


def check_groups(train: pd.DataFrame, comp: config.Competition) -> None:
    """A group split needs at least n_folds distinct groups."""
    n_groups = train["group"].nunique() if comp.group else comp.n_folds
    if n_groups < comp.n_folds:
        raise InputError(f"{comp.train}: column {comp.group!r}: {n_groups} distinct groups cannot fill "
                         f"n_folds={comp.n_folds} folds; lower n_folds in competition.yaml or drop the group key")


def rare_classes(train: pd.DataFrame, comp: config.Competition, classes: list[str]) -> str | None:
    """A one-line warning when a single-label class has fewer rows than folds. Not an error: real competitions have
    such classes, and every row still gets exactly one fold; the class is just not validated in every fold."""
    if comp.multilabel:
        return None
    counts = np.bincount(train["label"].to_numpy(), minlength=len(classes))
    rare = [j for j in np.flatnonzero(counts < comp.n_folds) if counts[j] > 0]
    if not rare:
        return None
    names = ", ".join(f"{classes[j]!r} ({counts[j]})" for j in rare[:5]) + (", ..." if len(rare) > 5 else "")
    return (f"warning: {comp.train}: column {comp.label[0]!r}: {len(rare)} class(es) have fewer rows than "
            f"n_folds={comp.n_folds}, so some folds never validate them: {names}")


def assign_folds(train: pd.DataFrame, comp: config.Competition, n_classes: int) -> np.ndarray:
    """Fold number (0..n_folds-1) of every row of processed train."""
    # Imported here: every training process imports this module for training_mask, and these cost ~1.5 s.
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    k, seed = comp.n_folds, comp.seed
    if comp.multilabel:
        # iterative-stratification ignores random_state unless shuffle=True (a known trap).
        splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(train)), label_matrix(train["labels"], n_classes))
    elif comp.group:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(train)), train["label"], groups=train["group"])
    else:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(train)), train["label"])
    fold = np.full(len(train), -1, dtype=np.int64)
    with warnings.catch_warnings():  # "least populated class": rare_classes() says it in one line with names
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for f, (_, val_idx) in enumerate(splits):
            fold[val_idx] = f
    assert (fold >= 0).all(), "a row got no fold"
    return fold


def training_mask(folds: np.ndarray, fold: int) -> np.ndarray:
    """Rows on the training side of `fold`; the complement is its validation set."""
    return folds != fold


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=config.keys_epilog("data/competition.yaml", ("", config.Competition)))
    config.add_path_options(ap, "competition")
    ap.add_argument("--train", default="data/processed/train.parquet", help="processed training rows")
    ap.add_argument("--classes", default="data/processed/classes.json", help="the class list prep wrote")
    ap.add_argument("--out", default="folds/folds.csv", help="where the fold assignment goes")
    args = ap.parse_args(argv)
    comp = config.load(config.Competition, args.competition)
    train = pd.read_parquet(args.train)
    classes = json.loads(Path(args.classes).read_text())["classes"]
    check_groups(train, comp)
    warning = rare_classes(train, comp, classes)
    if warning:
        print(warning, file=sys.stderr)
    fold = assign_folds(train, comp, len(classes))
    save_csv(args.out, pd.DataFrame({"id": train["id"], "fold": fold}))
    print(f"folds: {len(train)} rows in {comp.n_folds} folds, sizes {np.bincount(fold).tolist()}")


if __name__ == "__main__":
    main()
