"""submit stage: test probabilities -> a submission CSV in exactly sample_submission's format.

Reads  one or more test.npy files (averaged), data/processed/{test.parquet,classes.json}, data/competition.yaml,
       the competition's sample_submission
Writes submissions/<name>.csv   same columns, ids and row order as the sample; label names from the class list
Run    python -m foldstack.submit --probs folds/*/test.npy --out=submissions/mean.csv

Formats, from the sample's columns: one label column (class name; multi-label: names joined by label_sep; binary
with submission_values: probability -> P(second class)), or one column per class (probabilities, or 0/1 for
multi-label). The written file is read back and checked against the sample before it is renamed into place.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, metrics
from .errors import one_line_errors
from .io import InputError, atomic_path, read_table
from .labels import classes_json, label_y


def to_frame(probs: np.ndarray, ids, classes: list[str], comp: config.Competition, sample: pd.DataFrame,
             threshold: float | np.ndarray = 0.5) -> pd.DataFrame:
    """Probabilities in test.parquet row order -> a frame in the sample's columns and row order."""
    cols = [c for c in sample.columns if c != comp.id]
    by_id = pd.DataFrame(probs, index=pd.Index(ids, name=comp.id)).loc[sample[comp.id]]
    p = by_id.to_numpy()
    out = pd.DataFrame({comp.id: sample[comp.id].to_numpy()})
    if len(cols) > 1:  # one column per class
        values = metrics.decide(p, True, threshold) if comp.multilabel else p
        for j, c in enumerate(classes):
            out[c] = values[:, j]
        return out[[comp.id, *cols]]
    if comp.multilabel:
        decided = metrics.decide(p, True, threshold)
        out[cols[0]] = [comp.label_sep.join(classes[j] for j in np.flatnonzero(row)) for row in decided]
    elif comp.submission_values == "probability":
        out[cols[0]] = p[:, -1]
    else:
        out[cols[0]] = [classes[j] for j in p.argmax(1)]
    return out


def check_submission(sub: pd.DataFrame, sample: pd.DataFrame, classes: list[str], comp: config.Competition,
                     path) -> None:
    """Same columns, ids and order as the sample; every label a known class. One-line InputError otherwise."""
    if list(sub.columns) != list(sample.columns):
        raise InputError(f"{path}: columns {list(sub.columns)} differ from the sample's {list(sample.columns)}")
    if len(sub) != len(sample):
        raise InputError(f"{path}: {len(sub)} rows, the sample has {len(sample)}")
    differ = np.flatnonzero(sub[comp.id].astype(str).to_numpy() != sample[comp.id].astype(str).to_numpy())
    if len(differ):
        i = int(differ[0])
        raise InputError(f"{path}: row {i + 2}, column {comp.id!r}: id {sub[comp.id].iloc[i]!r}, "
                         f"the sample has {sample[comp.id].iloc[i]!r}")
    label_y(sub, classes, comp, path)  # raises on a label outside the class list


def write_submission(probs, out: Path, comp, processed: Path, threshold: float | np.ndarray = 0.5) -> pd.DataFrame:
    classes = classes_json(processed)["classes"]
    test = pd.read_parquet(processed / "test.parquet")
    sample = read_table(comp.sample_submission, ",", [comp.id])
    if probs.shape != (len(test), len(classes)):
        raise InputError(f"test probabilities have shape {probs.shape}, expected ({len(test)}, {len(classes)})")
    sub = to_frame(probs, test["id"].to_numpy(), classes, comp, sample, threshold)
    with atomic_path(out) as tmp:
        sub.to_csv(tmp, index=False)
        check_submission(read_table(tmp, ",", [comp.id]), sample, classes, comp, out)
    return sub


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probs", nargs="+", required=True, help="test.npy files to average")
    ap.add_argument("--out", required=True, help="submissions/<name>.csv")
    config.add_path_options(ap, "competition", "processed")
    args = ap.parse_args(argv)
    comp = config.load(config.Competition, args.competition)
    probs = np.mean([np.load(p) for p in args.probs], axis=0)
    write_submission(probs, Path(args.out), comp, Path(args.processed))
    print(f"submit: {args.out} from {len(args.probs)} prediction file(s), checked against {comp.sample_submission}")


if __name__ == "__main__":
    main()
