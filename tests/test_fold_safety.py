"""Augmented rows train only folds where their source row is on the training side; validation is original rows."""
import numpy as np
import pandas as pd

from foldstack import config
from foldstack import train as train_stage


def test_augmented_copies_of_validation_rows_never_reach_that_folds_training(captured_fit):
    n = 30
    train = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": [f"orig {i}" for i in range(n)],
                          "text_lemma": [f"orig {i}" for i in range(n)], "label": np.arange(n) % 3})
    extra = pd.DataFrame({"src_id": [f"r{i}" for i in range(n) for _ in range(2)],
                          "text": [f"aug {i} {c}" for i in range(n) for c in range(2)]})
    extra["text_lemma"] = extra["text"]
    fold_of = np.arange(n) % 3
    captured = captured_fit
    cfg, comp = config.Model(augment=("eda",)), config.Competition(n_folds=3)
    for fold in range(3):
        val_idx, _ = train_stage.run_fold(cfg, comp, train, train.head(2), fold_of, fold, 3, None, extra)
        val_ids = {f"{i}" for i in np.flatnonzero(fold_of == fold)}
        train_texts = captured["texts"]["train"]
        assert all(t.split()[1] not in val_ids for t in train_texts), "a validation row or its copy trained"
        assert sum(t.startswith("aug") for t in train_texts) == 2 * (n - len(val_ids)), "every allowed copy used"
        assert all(t.startswith("orig") for t in captured["texts"]["val"]), "validation is original rows only"
        # each augmented copy carries its source's label
        labels = {t: y for t, y in zip(train_texts, captured["ys"]["train"])}
        assert all(labels[t] == int(t.split()[1]) % 3 for t in train_texts)
