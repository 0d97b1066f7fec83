"""prep stage: raw competition files -> data/processed/{train,test}.parquet and classes.json.

Reads  the files named in data/competition.yaml (train, test, sample_submission).
Writes data/processed/train.parquet  id, text, text_lemma, label (class index) | labels (list of indices), group
                                     text: whitespace-normalised, case kept; text_lemma: lowercase WordNet lemmas
       data/processed/test.parquet   id, text, text_lemma
       data/processed/classes.json   the class list; column j of every prediction array is class j
Run    python -m foldstack.prep --competition=data/competition.yaml --out-dir=data/processed

Text columns are joined with FIELD_SEP, which the transformer stage swaps for its tokenizer's separator token.
Empty or missing text becomes "". Any other bad input stops the stage with one line naming file, row and column.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import config
from .errors import one_line_errors
from .io import InputError, check_unique_ids, first_missing, read_table, save_json, save_parquet
from .text import join_text, lemmatize_texts

def sample_label_columns(sample: pd.DataFrame, comp: config.Competition) -> list[str]:
    return [c for c in sample.columns if c != comp.id]


def class_list(train: pd.DataFrame, sample: pd.DataFrame, comp: config.Competition) -> list[str]:
    """Classes in prediction-column order: indicator columns, the sample's per-class columns, or sorted labels."""
    if comp.multilabel and len(comp.label) > 1:
        return list(comp.label)
    if comp.multilabel:
        found = {lab for cell in train[comp.label[0]] for lab in cell.split(comp.label_sep) if lab}
        return sorted(found)
    sample_cols = sample_label_columns(sample, comp)
    if len(sample_cols) > 1:
        return sample_cols  # the sample has one probability column per class: that is the class list
    return sorted(train[comp.label[0]].unique())


def check_sample_columns(sample: pd.DataFrame, train: pd.DataFrame, comp: config.Competition, path) -> None:
    """The sample's columns beside the id must be a submission format foldstack writes (submit.to_frame)."""
    cols = sample_label_columns(sample, comp)
    if not cols:
        raise InputError(f"{path}: no column beside {comp.id!r}; the sample must show the prediction column(s)")
    if comp.multilabel and len(comp.label) > 1:
        for col in comp.label:
            if col not in cols:
                raise InputError(f"{path}: column {col!r} is missing (a label column of competition.yaml)")
        for col in cols:
            if col not in comp.label:
                raise InputError(f"{path}: column {col!r} is not a label column of competition.yaml")
    elif len(cols) > 1 and not comp.multilabel and not set(train[comp.label[0]]) & set(cols):
        raise InputError(f"{path}: columns {', '.join(cols[:5])} beside {comp.id!r} would be one per class, but no "
                         f"training label is among them; a label-format sample has one column beside {comp.id!r}")


def check_classes(train: pd.DataFrame, comp: config.Competition, path) -> None:
    """Single-label training data needs two classes; a multi-label row in one column needs a label."""
    col = comp.label[0]
    if comp.multilabel and len(comp.label) == 1:
        empty = train[col].map(lambda c: not [lab for lab in c.split(comp.label_sep) if lab]).to_numpy()
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise InputError(f"{path}: row {i + 2}, column {col!r}: the row has no labels (only separators)")
    elif not comp.multilabel and train[col].nunique() < 2:
        raise InputError(f"{path}: column {col!r}: every row has the label {train[col].iloc[0]!r}; "
                         f"a classifier needs at least two classes")


def encode_labels(train: pd.DataFrame, classes: list[str], comp: config.Competition, path) -> pd.Series:
    """Class index per row (multiclass/binary) or a list of indices per row (multilabel)."""
    index = {c: i for i, c in enumerate(classes)}
    if comp.multilabel and len(comp.label) > 1:
        values = train[list(comp.label)]
        for col in comp.label:
            bad = ~values[col].isin(["0", "1"])
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(f"{path}: row {i + 2}, column {col!r}: expected 0 or 1, got {values[col].iloc[i]!r}")
        onehot = values.to_numpy() == "1"
        return pd.Series([list(np.flatnonzero(r)) for r in onehot], index=train.index)
    col = comp.label[0]
    cells = train[col].map(lambda c: [lab for lab in c.split(comp.label_sep) if lab]) if comp.multilabel \
        else train[col].map(lambda c: [c])
    for i, labs in enumerate(cells):
        unknown = [lab for lab in labs if lab not in index]
        if unknown:
            raise InputError(f"{path}: row {i + 2}, column {col!r}: label {unknown[0]!r} is not in the class list "
                             f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
    if comp.multilabel:
        return cells.map(lambda labs: sorted(index[lab] for lab in labs))
    return cells.map(lambda labs: index[labs[0]])


def check_sample(sample: pd.DataFrame, test: pd.DataFrame, comp: config.Competition, path) -> None:
    """The sample must hold exactly the test ids; submissions are written in the sample's row order."""
    check_unique_ids(sample, comp.id, path)
    test_ids = set(test[comp.id])
    for i, sid in enumerate(sample[comp.id]):
        if sid not in test_ids:
            raise InputError(f"{path}: row {i + 2}, column {comp.id!r}: id {sid!r} is not in the test file")
    if len(sample) != len(test):
        missing = next(t for t in test[comp.id] if t not in set(sample[comp.id]))
        raise InputError(f"{path}: column {comp.id!r}: test id {missing!r} has no row in the sample submission")


def prepare(train: pd.DataFrame, test: pd.DataFrame, sample: pd.DataFrame, comp: config.Competition,
            workers: int = 2) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Validated raw tables -> processed train, processed test, class list."""
    for col in comp.label:
        first_missing(train, col, comp.train)
    check_classes(train, comp, comp.train)
    check_sample_columns(sample, train, comp, comp.sample_submission)
    classes = class_list(train, sample, comp)
    labels = encode_labels(train, classes, comp, comp.train)
    texts = join_text(train, comp.text) + join_text(test, comp.text)
    lemmas = lemmatize_texts(texts, workers)
    n = len(train)
    out_train = pd.DataFrame({"id": train[comp.id].to_numpy(), "text": texts[:n], "text_lemma": lemmas[:n]})
    out_train["labels" if comp.multilabel else "label"] = labels.to_numpy()
    if comp.group:
        first_missing(train, comp.group, comp.train)
        out_train["group"] = train[comp.group].to_numpy()
    out_test = pd.DataFrame({"id": test[comp.id].to_numpy(), "text": texts[n:], "text_lemma": lemmas[n:]})
    return out_train, out_test, classes


def read_raw(comp: config.Competition):
    extra = [comp.group] if comp.group else []
    train = read_table(comp.train, comp.sep, [comp.id, *comp.text, *comp.label, *extra], comp.encoding)
    test = read_table(comp.test, comp.sep, [comp.id, *comp.text], comp.encoding)
    sample = read_table(comp.sample_submission, ",", [comp.id])
    check_unique_ids(train, comp.id, comp.train)
    check_unique_ids(test, comp.id, comp.test)
    check_sample(sample, test, comp, comp.sample_submission)
    return train, test, sample


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=config.keys_epilog("data/competition.yaml", ("", config.Competition)))
    config.add_path_options(ap, "competition")
    ap.add_argument("--out-dir", default="data/processed", help="where the parquet files go")
    ap.add_argument("--workers", type=int, default=2, help="processes for lemmatization")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    comp = config.load(config.Competition, args.competition)
    train, test, sample = read_raw(comp)
    out_train, out_test, classes = prepare(train, test, sample, comp, args.workers)
    out = Path(args.out_dir)
    save_json(out / "classes.json", {"task": comp.task, "classes": classes})
    save_parquet(out / "test.parquet", out_test)
    save_parquet(out / "train.parquet", out_train)  # last: it is the Make target
    # the other two files share the target's time: Make rebuilds neither just for being a moment older than it
    made = (out / "train.parquet").stat().st_mtime_ns
    for name in ("classes.json", "test.parquet"):
        os.utime(out / name, ns=(made, made))
    secs = time.perf_counter() - start
    print(f"prep: {len(out_train)} train + {len(out_test)} test texts, {len(classes)} classes, {secs:.1f}s "
          f"({(len(out_train) + len(out_test)) / secs:.0f} docs/s)")


if __name__ == "__main__":
    main()
