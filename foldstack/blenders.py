"""Blenders: the members' probabilities P [n, M, C] (M members) -> one probability matrix [n, C].

They follow the scikit-learn estimator API: `__init__` only stores its arguments, `fit(P, y)` returns self,
fitted attributes end in `_`, `clone` and `get_params` work (BaseEstimator), so the ensemble stage runs every
method through one nested-CV loop. `y` is class indices [n] (single-label) or a 0/1 matrix [n, C] (multi-label).
Single-label outputs are softmax-like rows; multi-label outputs are independent per-label probabilities.

Also here: per-label decision thresholds for multi-label tasks (`tune_thresholds`), tuned on OOF rows.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator

from . import metrics
from .estimators import full_columns, lgbm_classifier

EPS = 1e-7


def stack_inputs(P: np.ndarray, kind: str, multilabel: bool) -> np.ndarray:
    """Stacker inputs from probabilities [n, M, C]: 'prob' as is, 'logit' as log-odds (multi-label) or log p."""
    P = np.clip(P, EPS, 1 - EPS)
    if kind == "prob":
        return P
    return np.log(P / (1 - P)) if multilabel else np.log(P)


def log_loss(probs: np.ndarray, y: np.ndarray, multilabel: bool) -> float:
    p = np.clip(probs, EPS, 1 - EPS)
    if multilabel:
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


class MeanBlend(BaseEstimator):
    """`mean`: the members' plain average (weights_ = 1/M)."""

    def __init__(self, multilabel: bool = False):
        self.multilabel = multilabel

    def fit(self, P, y):
        self.weights_ = np.full(P.shape[1], 1 / P.shape[1])
        return self

    def predict_proba(self, P):
        return np.einsum("m,nmc->nc", self.weights_, P)  # [n, C]


class WeightedBlend(MeanBlend):
    """`weighted`: weights >= 0 summing to 1 that minimise the blend's log-loss on the fit rows (SLSQP)."""

    def fit(self, P, y):
        M = P.shape[1]
        if self.multilabel:
            def loss(w):
                p = np.clip(np.einsum("m,nmc->nc", w, P), EPS, 1 - EPS)
                d = -(y / p - (1 - y) / (1 - p)) / p.size  # d loss / d p, [n, C]
                return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), np.einsum("nc,nmc->m", d, P)
        else:
            Q = P[np.arange(len(y)), :, y]  # each member's probability of the true class, [n, M]

            def loss(w):
                b = np.clip(Q @ w, EPS, None)
                return -np.mean(np.log(b)), -(Q / b[:, None]).mean(0)
        res = minimize(loss, np.full(M, 1 / M), jac=True, method="SLSQP", bounds=[(0, 1)] * M,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(M)}])
        w = np.clip(res.x, 0, None)
        self.weights_ = w / w.sum()
        self.converged_ = bool(res.success)
        return self


class CaruanaBlend(MeanBlend):
    """`caruana`: greedy ensemble selection with replacement (Caruana et al. 2004): `n_rounds` times, add the member
    that most improves the running average's `metric`; weights_ = how often each member was picked / n_rounds."""

    def __init__(self, multilabel: bool = False, metric: str = "log_loss", n_rounds: int = 50):
        self.multilabel = multilabel
        self.metric = metric
        self.n_rounds = n_rounds

    def fit(self, P, y):
        M = P.shape[1]
        counts, total = np.zeros(M), np.zeros(P[:, 0].shape)
        for r in range(self.n_rounds):
            scores = [decided_score(self.metric, y, (total + P[:, m]) / (r + 1), self.multilabel) for m in range(M)]
            best = int(np.argmax(scores) if metrics.GREATER_IS_BETTER[self.metric] else np.argmin(scores))
            counts[best] += 1
            total += P[:, best]
        self.weights_ = counts / counts.sum()
        return self


class _Stacker(BaseEstimator):
    """Shared by the stackers: single-label -> one model on all members' features [n, M*C]; multi-label -> a model
    per label on the members' features for that label [n, M]. A label with fewer than `min_positives` positives (or
    negatives) in the fit rows keeps the members' mean: too few rows to learn from, and rare labels carry a trap —
    a member's OOF prior for a rare label is lower exactly in the fold that holds its positives (the training side
    had fewer), a pattern a stacker learns on K-1 folds and that fails on the held-out fold (Reuters: one fold's
    micro-F1 fell to 0.63 before this rule)."""
    min_positives = 1

    def _model(self):
        raise NotImplementedError

    def fit(self, P, y):
        X = stack_inputs(P, self.features, self.multilabel)
        self.n_classes_ = P.shape[2]
        if not self.multilabel:
            self.model_ = self._model().fit(X.reshape(len(X), -1), y)
            return self
        pos = y.sum(0)
        self.models_ = [self._model().fit(X[:, :, j], y[:, j].astype(int))
                        if min(pos[j], len(y) - pos[j]) >= max(self.min_positives, 1) else None
                        for j in range(self.n_classes_)]
        return self

    def predict_proba(self, P):
        X = stack_inputs(P, self.features, self.multilabel)
        if not self.multilabel:
            return full_columns(self.model_.predict_proba(X.reshape(len(X), -1)), self.model_.classes_,
                                 self.n_classes_)
        out = P.mean(1)
        for j, model in enumerate(self.models_):
            if model is not None:
                out[:, j] = model.predict_proba(X[:, :, j])[:, 1]
        return out


class StackLR(_Stacker):
    """`stack_lr`: LogisticRegression (L2, strength 1/C) on the members' standardised log-odds or probabilities."""

    def __init__(self, multilabel: bool = False, features: str = "logit", C: float = 1.0, min_positives: int = 20):
        self.multilabel = multilabel
        self.features = features
        self.C = C
        self.min_positives = min_positives

    def _model(self):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        # Log-probabilities reach log(1e-7) = -16: unscaled, lbfgs crawled 1000 iterations and stopped short
        # (14 min on 20news); standardised, it converges in < 100.
        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=500))


class StackLGBM(_Stacker):
    """`stack_lgbm`: a small, regularised LightGBM (few shallow trees, strong L2, large leaves) on the same inputs."""

    def __init__(self, multilabel: bool = False, features: str = "logit", n_estimators: int = 200,
                 learning_rate: float = 0.05, num_leaves: int = 7, min_child_samples: int = 50,
                 reg_lambda: float = 5.0, n_jobs: int = 1, random_state: int = 0):
        self.multilabel = multilabel
        self.features = features
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, P, y):
        if not self.multilabel:
            return super().fit(P, y)
        # Multi-label: one model over all (row, label) pairs, the label's index a categorical feature, so rare labels
        # borrow strength from frequent ones (a tree per label would see a handful of positives).
        self.n_classes_ = P.shape[2]
        X = _long(stack_inputs(P, self.features, True))
        self.model_ = self._model().fit(X, y.reshape(-1).astype(int), categorical_feature=[X.shape[1] - 1])
        return self

    def predict_proba(self, P):
        if not self.multilabel:
            return super().predict_proba(P)
        X = _long(stack_inputs(P, self.features, True))
        return self.model_.predict_proba(X)[:, 1].reshape(len(P), self.n_classes_)

    def _model(self):
        return lgbm_classifier(self.n_estimators, self.learning_rate, self.num_leaves, self.min_child_samples,
                               self.reg_lambda, self.n_jobs, self.random_state, colsample_bytree=0.8, subsample=0.8)


def _long(X: np.ndarray) -> np.ndarray:
    """[n, M, C] -> [n * C, M + 1]: row i * C + j holds the members' values for label j of row i, then j."""
    n, M, C = X.shape
    return np.concatenate([X.transpose(0, 2, 1).reshape(n * C, M), np.tile(np.arange(C), n)[:, None]], axis=1)


GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)  # candidate thresholds


def _label_gain(metric: str, pred: np.ndarray, y: np.ndarray, j: int, cand: np.ndarray) -> np.ndarray:
    """The metric for each candidate decision column `cand` [n, G] of label j, the other labels as in `pred`."""
    yj = y[:, j, None].astype(bool)
    tp, fp, fn = (cand & yj).sum(0), (cand & ~yj).sum(0), (~cand & yj).sum(0)
    if metric == "macro_f1":  # labels are independent: maximise label j's own F1
        return 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    if metric == "accuracy":  # subset accuracy: rows whose other labels are all right
        others_ok = ((pred != y).sum(1) - (pred[:, j] != y[:, j]))[:, None] == 0
        return (others_ok & (cand == yj)).mean(0)
    others = np.arange(y.shape[1]) != j
    rest = pred.astype(bool) & others[None]  # micro-F1: the totals over the other labels
    TP, FP, FN = (rest & (y > 0)).sum(), (rest & (y == 0)).sum(), ((~rest) & (y > 0)).sum() - (y[:, j] > 0).sum()
    return 2 * (TP + tp) / np.maximum(2 * (TP + tp) + FP + fp + FN + fn, 1)


def tune_thresholds(probs: np.ndarray, y: np.ndarray, metric: str, mode: str = "per_label",
                    min_positives: int = 5, passes: int = 2) -> np.ndarray:
    """Per-label thresholds [C] for `metrics.decide` that maximise `metric` on these rows: first one global
    threshold, then (mode per_label) coordinate ascent over labels with >= min_positives positives, others keeping
    the global one. A label moves only on a strict gain, so ties keep the global value. log_loss: all 0.5."""
    C = probs.shape[1]
    if mode == "none" or metric == "log_loss":
        return np.full(C, 0.5)
    glob = [decided_score(metric, y, probs, True, t) for t in GRID]
    thr = np.full(C, GRID[int(np.argmax(glob))])
    if mode == "global":
        return thr
    top = np.zeros(probs.shape, bool)
    top[np.arange(len(probs)), probs.argmax(1)] = True  # decide() always keeps the top label
    for _ in range(passes):
        for j in np.flatnonzero(y.sum(0) >= min_positives):
            pred = metrics.decide(probs, True, thr)
            cand = (probs[:, j, None] >= GRID[None]) | top[:, j, None]  # [n, G]
            gain = _label_gain(metric, pred, y, j, cand)
            current = _label_gain(metric, pred, y, j, pred[:, j, None].astype(bool))[0]
            if gain.max() > current + 1e-12:
                thr[j] = GRID[int(np.argmax(gain))]
    return thr


def decided_score(metric: str, y: np.ndarray, probs: np.ndarray, multilabel: bool, thr=0.5) -> float:
    """metrics.score, at per-label (or per-row [n, C]) thresholds for multi-label, computed from counts: the same
    values as scikit-learn's (zero_division=0), fast enough to call thousands of times in greedy selection."""
    if metric == "log_loss":
        return log_loss(probs, y, multilabel)
    if not multilabel:
        pred = probs.argmax(1)
        if metric == "accuracy":
            return float((pred == y).mean())
        C = probs.shape[1]
        tp = np.bincount(y[pred == y], minlength=C)
        fp, fn = np.bincount(pred, minlength=C) - tp, np.bincount(y, minlength=C) - tp
    else:
        pred, truth = metrics.decide(probs, True, thr).astype(bool), y > 0
        if metric == "accuracy":
            return float((pred == truth).all(1).mean())
        tp, fp, fn = (pred & truth).sum(0), (pred & ~truth).sum(0), (~pred & truth).sum(0)
    if metric == "micro_f1":
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    return float(np.mean(2 * tp / np.maximum(2 * tp + fp + fn, 1)))
