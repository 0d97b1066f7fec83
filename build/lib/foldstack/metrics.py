"""Competition metrics on probability matrices, and the decisions they imply.

`probs` is always [n_rows, n_classes]: softmax rows for single-label tasks, independent sigmoids for multi-label.
`y` is a class-index vector (single-label) or a 0/1 matrix (multi-label).
"""
from __future__ import annotations

import numpy as np

GREATER_IS_BETTER = {"accuracy": True, "macro_f1": True, "micro_f1": True, "log_loss": False}


def decide(probs: np.ndarray, multilabel: bool, threshold: float = 0.5) -> np.ndarray:
    """Class indices (single-label) or a 0/1 matrix (multi-label; every row keeps at least its top label)."""
    if not multilabel:
        return probs.argmax(1)
    pred = (probs >= threshold).astype(np.int64)
    pred[np.arange(len(probs)), probs.argmax(1)] = 1
    return pred


def score(metric: str, y: np.ndarray, probs: np.ndarray, multilabel: bool) -> float:
    """The competition's metric of `probs` against the truth `y`."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss  # lazy: ~1 s, not needed to import us
    probs = np.asarray(probs, dtype=np.float64)
    if metric == "log_loss":
        if multilabel:
            eps = 1e-7
            p = np.clip(probs, eps, 1 - eps)
            return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        return float(log_loss(y, probs, labels=np.arange(probs.shape[1])))
    pred = decide(probs, multilabel)
    if metric == "accuracy":
        return float(accuracy_score(y, pred))  # subset accuracy for multi-label
    average = "macro" if metric == "macro_f1" else "micro"
    labels = None if multilabel else np.arange(probs.shape[1])
    return float(f1_score(y, pred, average=average, labels=labels, zero_division=0))


def better(metric: str, a: float, b: float) -> bool:
    """Is score a strictly better than score b?"""
    return a > b if GREATER_IS_BETTER[metric] else a < b
