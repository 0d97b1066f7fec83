"""gather stage: one model's fold parts -> its OOF contract.

Reads  <model-dir>/fold<k>.{npz,json} for every fold, data/processed/classes.json, folds/folds.csv
Writes <model-dir>/oof.npy       float32 [n_train, C], row i = row i of train.parquet, written by the fold holding it
       <model-dir>/test.npy      float32 [n_test, C], mean of the folds' test predictions
       <model-dir>/manifest.json class list, per-fold and overall CV, config hash, version, timings
Run    python -m foldstack.gather --model-dir=folds/minilm_bilstm --n-folds=5
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, config, metrics
from .errors import one_line_errors
from .labels import classes_json, targets
from .io import InputError, member_name, save_json, save_npy


def assemble(parts: list[dict], n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold parts (val_idx, val, test) -> (oof, test); every train row must be written exactly once."""
    n_classes = parts[0]["val"].shape[1]
    oof = np.zeros((n_train, n_classes), dtype=np.float32)
    written = np.zeros(n_train, dtype=np.int64)
    for part in parts:
        oof[part["val_idx"]] = part["val"]
        written[part["val_idx"]] += 1
    if not (written == 1).all():
        bad = int(np.flatnonzero(written != 1)[0])
        raise ValueError(f"OOF row {bad} was written {written[bad]} times (expected once)")
    test = np.mean([part["test"] for part in parts], axis=0).astype(np.float32)
    return oof, test


def check_same_config(summaries: list[dict], model_dir: Path, current: str | None, model_yaml) -> None:
    """Every fold trained from one version of the model YAML, the current one when given: a YAML edited while
    its folds trained (Make re-runs them all next time) must not be blended as one model meanwhile."""
    want = current or summaries[0]["config_hash"]
    for s in summaries:
        if s["config_hash"] != want:
            raise InputError(f"{model_dir}/fold{s['fold']}.json: trained from another version of "
                             f"{model_yaml or 'the model YAML'} than {'it is now' if current else 'fold 0'} "
                             f"(edited while the folds trained?); run `make folds` again to retrain them")


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True, help="folds/<m>[/r<r>]: the fold parts and where the OOF goes")
    ap.add_argument("--n-folds", type=int, required=True, help="number of folds (competition.yaml n_folds)")
    config.add_path_options(ap, "processed")
    ap.add_argument("--model", default=None, help="models/<m>.yaml: every fold must have trained from it as it is")
    args = ap.parse_args(argv)
    model_dir, processed = Path(args.model_dir), Path(args.processed)
    info = classes_json(processed)
    multilabel = info["task"] == "multilabel"
    train = pd.read_parquet(processed / "train.parquet")
    parts = [dict(np.load(model_dir / f"fold{k}.npz")) for k in range(args.n_folds)]
    summaries = [json.loads((model_dir / f"fold{k}.json").read_text()) for k in range(args.n_folds)]
    current = config.config_hash(config.load(config.Model, args.model)) if args.model else None
    check_same_config(summaries, model_dir, current, args.model)
    oof, test = assemble(parts, len(train))
    metric = summaries[0]["metric"]
    cv = metrics.score(metric, targets(train, len(info["classes"]), multilabel), oof, multilabel)
    manifest = {"model": member_name(model_dir), "classes": info["classes"], "task": info["task"], "metric": metric,
                "cv": cv, "fold_scores": [s["score"] for s in summaries], "n_train": len(train),
                "n_test": len(test), "config_hash": summaries[0]["config_hash"], "version": __version__,
                "train_secs": sum(s["secs"] for s in summaries), "folds": summaries}
    save_npy(model_dir / "oof.npy", oof)
    save_npy(model_dir / "test.npy", test)
    save_json(model_dir / "manifest.json", manifest)  # last: the Make target
    print(f"gather {model_dir}: CV {metric} {cv:.4f}  folds " +
          " ".join(f"{s:.4f}" for s in manifest["fold_scores"]))


if __name__ == "__main__":
    main()
