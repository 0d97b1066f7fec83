"""Estimator helpers shared by the classical members (foldstack.classical) and the blenders (foldstack.blenders):
probabilities over every class, per-column binary models, and the one LightGBM builder."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def full_columns(probs: np.ndarray, seen, n_classes: int) -> np.ndarray:
    """predict_proba over the classes a model saw -> [n, n_classes]; a class absent from its fit rows gets 0."""
    out = np.zeros((len(probs), n_classes), dtype=np.float32)
    out[:, np.asarray(seen, dtype=np.int64)] = probs
    return out


class AllClasses:
    """A fitted multi-class estimator whose predict_proba covers every class of the competition (0 for a class
    absent from the fold's training rows)."""

    def __init__(self, model, n_classes: int):
        self.model, self.n_classes = model, n_classes

    def predict_proba(self, X) -> np.ndarray:
        return full_columns(self.model.predict_proba(X), self.model.classes_, self.n_classes)


class PerColumn:
    """One binary model per output column (a label; for nbsvm also a class), each optionally reading the features
    scaled by its own vector; a float stands for a constant probability (a label too rare in the fold to fit).
    `normalize`: rows renormalised to sum to 1 (nbsvm's multi-class probabilities)."""

    def __init__(self, models: list, scales: list | None = None, normalize: bool = False):
        self.models, self.scales, self.normalize = models, scales, normalize

    def predict_proba(self, X) -> np.ndarray:
        cols = []
        for j, m in enumerate(self.models):
            if isinstance(m, float):
                cols.append(np.full(X.shape[0], m, dtype=np.float32))
            else:
                Xj = X @ sp.diags(self.scales[j]) if self.scales else X
                cols.append(m.predict_proba(Xj)[:, 1].astype(np.float32))
        q = np.stack(cols, axis=1)
        return q / np.clip(q.sum(1, keepdims=True), 1e-12, None) if self.normalize else q


def lgbm_classifier(n_estimators: int, learning_rate: float, num_leaves: int, min_child_samples: int,
                    reg_lambda: float, n_jobs: int, seed: int, colsample_bytree: float = 1.0, subsample: float = 1.0,
                    max_bin: int = 255):
    """The one LightGBM builder (the tfidf_lgbm member and the stack_lgbm blender)."""
    import lightgbm as lgb
    return lgb.LGBMClassifier(n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
                              min_child_samples=min_child_samples, colsample_bytree=colsample_bytree,
                              subsample=subsample, subsample_freq=1 if subsample < 1 else 0, reg_lambda=reg_lambda,
                              max_bin=max_bin, n_jobs=n_jobs, random_state=seed, verbose=-1)


def rare(y01: np.ndarray) -> bool:
    """Fewer than 2 positives or 2 negatives: too few to fit (or calibrate) a binary model on."""
    pos = int(y01.sum())
    return min(pos, len(y01) - pos) < 2
