"""Labels in the forms the stages share: class indices, 0/1 matrices, submission-format frames, and the pseudo-labelled
rows a fold trains with (features/pseudo_r<r>.parquet, written by foldstack.pseudo, read by foldstack.train).

A helper below the stages: folds, train, gather, ensemble, submit, score, pseudo and report all import it, and it
imports no stage.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import config
from .io import InputError


def classes_json(processed) -> dict:
    """<processed>/classes.json as prep wrote it: {"task": ..., "classes": [...]}; column j of every prediction
    array is classes[j]."""
    path = Path(processed) / "classes.json"
    if not path.exists():
        raise InputError(f"{path}: file not found; run `make prep` first")
    return json.loads(path.read_text())


def label_matrix(labels, n_classes: int) -> np.ndarray:
    """Lists of class indices -> 0/1 matrix [n_rows, n_classes]."""
    y = np.zeros((len(labels), n_classes), dtype=np.float32)
    for i, labs in enumerate(labels):
        y[i, list(labs)] = 1.0
    return y


def targets(df: pd.DataFrame, n_classes: int, multilabel: bool) -> np.ndarray:
    """Processed train rows -> class indices [n] (int64) or a 0/1 matrix [n, C] (float32)."""
    if multilabel:
        return label_matrix(df["labels"], n_classes)
    return df["label"].to_numpy(dtype=np.int64)


def label_y(df: pd.DataFrame, classes: list[str], comp: config.Competition, path) -> np.ndarray:
    """A submission-format frame -> class indices [n] or a 0/1 matrix [n, C] (per-class columns: as is)."""
    cols = [c for c in df.columns if c != comp.id]
    if len(cols) > 1:
        return df[classes].to_numpy(dtype=np.float64)
    index = {c: j for j, c in enumerate(classes)}
    cells = df[cols[0]].fillna("").astype(str)
    if comp.submission_values == "probability" and not comp.multilabel:
        return cells.astype(float).to_numpy()
    rows = [[lab for lab in cell.split(comp.label_sep) if lab] if comp.multilabel else [cell] for cell in cells]
    for i, labs in enumerate(rows):
        bad = [lab for lab in labs if lab not in index]
        if bad:
            raise InputError(f"{path}: row {i + 2}, column {cols[0]!r}: label {bad[0]!r} is not in the class list")
    if not comp.multilabel:
        return np.array([index[labs[0]] for labs in rows])
    y = np.zeros((len(rows), len(classes)))
    for i, labs in enumerate(rows):
        y[i, [index[lab] for lab in labs]] = 1
    return y


def training_rows(pseudo: pd.DataFrame, test: pd.DataFrame, fold: int, column: str, n_classes: int,
                  multilabel: bool, soft: bool) -> tuple[list, np.ndarray]:
    """(texts, targets) of fold `fold`'s pseudo rows; targets are probabilities [n, C] when soft and the file has
    them, else class indices [n] / a 0/1 matrix [n, C] like the processed rows'."""
    rows = pseudo[pseudo["fold"] == fold]
    texts = test[column].to_numpy()[pd.Index(test["id"].astype(str)).get_indexer(rows["id"].astype(str))].tolist()
    if soft and "probs" in rows:
        return texts, np.array(rows["probs"].tolist(), dtype=np.float32).reshape(len(rows), n_classes)
    return texts, targets(rows, n_classes, multilabel)


def join_targets(y: np.ndarray, y_pseudo: np.ndarray, n_classes: int) -> np.ndarray:
    """Original targets followed by the pseudo rows'. Cross-entropy takes class indices or probabilities, not a mix:
    next to soft pseudo targets the original class indices become one-hot rows."""
    if y.ndim == 1 and y_pseudo.ndim == 2:
        y = np.eye(n_classes, dtype=np.float32)[y]
    return np.concatenate([y, y_pseudo.astype(y.dtype)])


def read_pseudo(path, test_ids: pd.Series, n_classes: int, multilabel: bool) -> pd.DataFrame:
    """features/pseudo_r<r>.parquet, checked against the test set; InputError names the file, row and column."""
    df = pd.read_parquet(path)
    label = "labels" if multilabel else "label"
    for col in ("id", "fold", label):
        if col not in df.columns:
            raise InputError(f"{path}: column {col!r} is missing (columns: {', '.join(df.columns)})")
    bad_ids = df.index[~df["id"].astype(str).isin(test_ids.astype(str))]
    values = df[label].explode().dropna() if multilabel else df[label]  # one entry per (row, label)
    bad_labels = values.index[~values.astype(np.int64).between(0, n_classes - 1)]
    for col, bad, what in (("id", bad_ids, "not a test id"), (label, bad_labels, "not a class index of classes.json")):
        if len(bad):
            i, value = int(bad[0]), df[col].iloc[int(bad[0])]
            value = value.tolist() if hasattr(value, "tolist") else value  # 3, not np.int64(3)
            raise InputError(f"{path}: row {i}, column {col!r}: {value!r} is {what}")
    return df.assign(id=df["id"].astype(str))
