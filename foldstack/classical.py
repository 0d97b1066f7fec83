"""Classical base models: cheap members whose errors differ from the transformer's.

  tfidf_lr    TF-IDF word + character n-grams -> LogisticRegression
  tfidf_lgbm  TF-IDF (+ TruncatedSVD) -> LightGBM
  tfidf_svm   TF-IDF -> LinearSVC, probabilities by sigmoid calibration on an inner CV of the fold's training rows
  nbsvm       TF-IDF scaled by per-class naive-Bayes log-count ratios -> LogisticRegression (Wang & Manning 2012)
  embed_lr    frozen sentence embeddings of an encoder (mean-pooled, computed once per text and cached) ->
              LogisticRegression

Called by the train stage (`foldstack.train`, `kind: tfidf_lr | tfidf_lgbm`) for one fold, so they meet the same OOF
contract as the transformers: fitted on the fold's training rows only, predicting its validation rows and the test
set. The kind's options are the model YAML's `params:` mapping, read at load into the kind's frozen dataclass
(kinds.py); unknown keys and wrong types stop there with one line naming the file and the key.

Multi-label: one binary model per label (one-vs-rest), independent sigmoid probabilities per label.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import metrics
from .kinds import NBSVM, EmbedLR, Tfidf, TfidfLGBM, TfidfLR, TfidfSVM
from .estimators import AllClasses, PerColumn, lgbm_classifier, rare
from .text import FIELD_SEP


class Vectorizer:
    """The fold's TF-IDF vectorizers (word, and char_wb n-grams), fitted on its training texts only; they then
    transform any texts (validation, test, or a new file at `make predict`) the same way."""

    def __init__(self, p: Tfidf, train_texts: list[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer
        common = dict(min_df=p.min_df, max_df=p.max_df, max_features=p.max_features, sublinear_tf=p.sublinear_tf,
                      strip_accents="unicode", dtype=np.float32)
        specs = [("word", p.word_ngrams, None)]
        if p.char_ngrams:
            specs.append(("char_wb", p.char_ngrams, p.char_max_chars))
        self.parts = []
        for analyzer, ngrams, cap in specs:
            self.parts.append((TfidfVectorizer(analyzer=analyzer, ngram_range=tuple(ngrams), **common), cap))
        # fitted and applied in one pass over the training texts (fit, then transform, would read them twice)
        self.train_matrix = self._stack([vec.fit_transform(self._cut(_clean(train_texts), cap))
                                         for vec, cap in self.parts])
        self.n_features = self.train_matrix.shape[1]

    @staticmethod
    def _stack(blocks: list) -> sp.csr_matrix:
        X = sp.hstack(blocks, format="csr")
        X.sort_indices()  # one-vs-rest workers get read-only memory maps and cannot sort them in place
        return X

    def __getstate__(self):  # the training matrix is not part of the fitted model
        return {k: v for k, v in self.__dict__.items() if k != "train_matrix"}

    @staticmethod
    def _cut(rows: list[str], cap: int | None) -> list[str]:
        return [t[:cap] for t in rows] if cap else rows

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        clean = _clean(texts)
        return self._stack([vec.transform(self._cut(clean, cap)) for vec, cap in self.parts])


def _clean(texts: list[str]) -> list[str]:
    return [t.replace(FIELD_SEP, "\n") for t in texts]


def vectorize(p: Tfidf, texts: dict) -> tuple[dict, int]:
    """texts[train|val|test] -> sparse float32 TF-IDF matrices [n, n_features], fitted on texts['train'] only."""
    vec = Vectorizer(p, texts["train"])
    return {part: vec.train_matrix if part == "train" else vec.transform(rows) for part, rows in texts.items()}, \
        vec.n_features


def fit_lr(p: TfidfLR, X: dict, y: np.ndarray, n_classes: int, multilabel: bool, seed: int) -> tuple[object, dict]:
    """LogisticRegression (one-vs-rest for liblinear and for multi-label)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    lr = LogisticRegression(C=p.C, solver=p.solver, dual=p.solver == "liblinear", class_weight=p.class_weight,
                            max_iter=p.max_iter, random_state=seed)
    ovr = multilabel or p.solver == "liblinear"
    model = OneVsRestClassifier(lr, n_jobs=p.n_jobs) if ovr else lr
    with warnings.catch_warnings():  # a label absent from a fold's training rows is predicted as constant 0
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        model.fit(X["train"], y)
    iters = [int(np.max(e.n_iter_)) for e in model.estimators_ if hasattr(e, "n_iter_")] if ovr \
        else [int(np.max(model.n_iter_))]
    return (model if multilabel else AllClasses(model, n_classes)), {"max_iter_used": max(iters, default=0)}


def _boost(p: TfidfLGBM, X: dict, y: np.ndarray, y_val: np.ndarray, seed: int):
    """One LightGBM model. Early stopping watches this fold's own validation rows: the same choice as the
    transformer's best epoch (the fold's OOF is then slightly optimistic; no other fold's rows, and never the
    test set, take part). The model at the chosen round predicts both the validation rows and the test set."""
    import lightgbm as lgb
    model = lgbm_classifier(p.n_estimators, p.learning_rate, p.num_leaves, p.min_child_samples, p.reg_lambda,
                            p.n_jobs, seed, p.colsample_bytree, p.subsample, p.max_bin)
    stop = p.early_stopping_rounds > 0 and len(np.unique(y_val)) > 1
    kw = dict(eval_X=(X["val"],), eval_y=(y_val,),
              callbacks=[lgb.early_stopping(p.early_stopping_rounds, verbose=False)]) if stop else {}
    model.fit(X["train"], y, **kw)
    return model, int(model.best_iteration_ or p.n_estimators)


def fit_lgbm(p: TfidfLGBM, X: dict, y: np.ndarray, y_val: np.ndarray, n_classes: int, multilabel: bool,
             seed: int) -> tuple[object, dict]:
    """LightGBM multiclass, or one binary LightGBM per label; a label with < 2 positives is its training rate."""
    if not multilabel:
        model, rounds = _boost(p, X, y, y_val, seed)
        return AllClasses(model, n_classes), {"rounds": [rounds]}
    models, rounds = [], []
    for j in range(y.shape[1]):
        if rare(y[:, j]):
            models.append(float(y[:, j].mean()))
            rounds.append(0)
            continue
        model, r = _boost(p, X, y[:, j].astype(np.int64), y_val[:, j].astype(np.int64), seed)
        models.append(model)
        rounds.append(r)
    return PerColumn(models), {"rounds": rounds}


def _calibrated_svc(p: TfidfSVM, X_train, y: np.ndarray, seed: int):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import LinearSVC
    svc = LinearSVC(C=p.C, class_weight=p.class_weight, max_iter=p.max_iter, random_state=seed)
    folds = int(min(p.calibration_folds, np.unique(y, return_counts=True)[1].min()))
    return CalibratedClassifierCV(svc, method=p.calibration, cv=folds).fit(X_train, y)


def fit_svm(p: TfidfSVM, X: dict, y: np.ndarray, n_classes: int, multilabel: bool, seed: int) -> tuple[object, dict]:
    """Calibrated one-vs-rest LinearSVC; multi-label: one per label, and a label with fewer positives (or
    negatives) than 2 in the fold's training rows predicts its training rate."""
    if not multilabel:
        # calibration needs 2 rows per class: a rarer class sits out of this fold's fit (probability 0, as a class
        # absent from the fold's training rows does)
        counts = np.bincount(y, minlength=n_classes)
        keep = counts[y] >= 2
        model = _calibrated_svc(p, X["train"][keep], y[keep], seed)
        return AllClasses(model, n_classes), {"classes_left_out": int(((counts > 0) & (counts < 2)).sum())}
    models = [float(y[:, j].mean()) if rare(y[:, j]) else _calibrated_svc(p, X["train"], y[:, j].astype(np.int64), seed)
              for j in range(y.shape[1])]
    return PerColumn(models), {}


def nb_ratio(X, y01: np.ndarray, alpha: float) -> np.ndarray:
    """Naive-Bayes log-count ratio per feature [n_features] for one binary target."""
    pos = alpha + np.asarray(X[y01 == 1].sum(0)).ravel()
    neg = alpha + np.asarray(X[y01 == 0].sum(0)).ravel()
    return (np.log(pos / pos.sum()) - np.log(neg / neg.sum())).astype(np.float32)


def _nb_one(p: NBSVM, X_train, y01: np.ndarray, seed: int) -> tuple[object, np.ndarray | None]:
    """One binary NB-weighted LogisticRegression and its feature scaling (a constant when y01 is)."""
    from sklearn.linear_model import LogisticRegression
    if y01.min() == y01.max():  # a label absent (or everywhere) in this fold's training rows
        return float(y01[0]), np.ones(X_train.shape[1], dtype=np.float32)
    r = nb_ratio(X_train, y01, p.alpha)
    lr = LogisticRegression(C=p.C, solver="liblinear", dual=True, max_iter=p.max_iter, random_state=seed)
    return lr.fit(X_train @ sp.diags(r), y01), r


def fit_nbsvm(p: NBSVM, X: dict, y: np.ndarray, n_classes: int, multilabel: bool, seed: int) -> tuple[object, dict]:
    """One NB-weighted binary model per class or label; multi-class rows renormalised to sum to 1."""
    from joblib import Parallel, delayed
    Y = y if multilabel else np.eye(n_classes, dtype=np.int64)[y]
    fits = Parallel(n_jobs=p.n_jobs)(delayed(_nb_one)(p, X["train"], Y[:, j].astype(np.int64), seed)
                                     for j in range(n_classes))
    return PerColumn([m for m, _ in fits], [r for _, r in fits], normalize=not multilabel), {}


def fit_embed_lr(p: EmbedLR, E: dict, y: np.ndarray, n_classes: int, multilabel: bool, seed: int):
    """LogisticRegression (multinomial lbfgs; multi-label one-vs-rest) on dense embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    lr = LogisticRegression(C=p.C, max_iter=p.max_iter, random_state=seed)
    model = OneVsRestClassifier(lr) if multilabel else lr
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        model.fit(E["train"], y)
    return (model if multilabel else AllClasses(model, n_classes)), {}


class SVDProjection:
    """TruncatedSVD fitted on the fold's training rows -> dense float32 [n, k]."""

    def __init__(self, X_train, k: int, seed: int):
        from sklearn.decomposition import TruncatedSVD
        self.svd = TruncatedSVD(n_components=min(k, X_train.shape[1] - 1), random_state=seed).fit(X_train)

    def transform(self, X) -> np.ndarray:
        return self.svd.transform(X).astype(np.float32)


@dataclass
class FittedMember:
    """One fold's fitted classical model, texts -> probabilities [n, C]: kept as <out-dir>/fold<k>.joblib so that
    `make predict` applies exactly what produced the fold's OOF and test arrays."""
    kind: str
    params: object
    features: Vectorizer | None    # None for embed_lr: its features are the encoder's pooled embeddings
    svd: SVDProjection | None
    estimator: object              # predict_proba(features) -> [n, C], every class / label

    def features_of(self, texts: list[str], embed=None):
        """`embed(texts)` supplies embed_lr's embeddings (hidden_cache.embed_texts or the fold's cached table)."""
        X = embed(texts) if self.features is None else self.features.transform(texts)
        return self.svd.transform(X) if self.svd is not None else X

    def predict(self, texts: list[str], embed=None) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(self.features_of(texts, embed)), dtype=np.float32)


FITS = {"tfidf_lr": fit_lr, "tfidf_svm": fit_svm, "nbsvm": fit_nbsvm, "embed_lr": fit_embed_lr}


def fit_member(cfg, comp, texts: dict, ys: dict, n_classes: int, seed: int, cache=None):
    """Fit on texts['train'] -> (FittedMember, {part: features} for every part, info)."""
    p = cfg.options
    features = None if cfg.kind == "embed_lr" else Vectorizer(p, texts["train"])
    member = FittedMember(cfg.kind, p, features, None, None)
    X = {part: member.features_of(rows, cache.embed if cache else None) for part, rows in texts.items()
         if part != "train" or features is None}
    if features is not None:
        X["train"], features.train_matrix = features.train_matrix, None
    if cfg.kind == "tfidf_lgbm" and p.svd_components:
        member.svd = SVDProjection(X["train"], p.svd_components, seed)
        X = {part: member.svd.transform(m) for part, m in X.items()}
    if cfg.kind in FITS:
        member.estimator, info = FITS[cfg.kind](p, X, ys["train"], n_classes, comp.multilabel, seed)
    else:
        member.estimator, info = fit_lgbm(p, X, ys["train"], ys["val"], n_classes, comp.multilabel, seed)
    n_features = cache.width if features is None else features.n_features
    return member, X, {"n_features": n_features, **info}


def fit_predict(cfg, comp, texts: dict, ys: dict, n_classes: int, log_path, seed: int, cache=None) -> dict:
    """One fold: texts/ys keyed by train / val (/ test) -> {"val", "test", "score", "model", timings, "history"}."""
    t0 = time.perf_counter()
    member, X, info = fit_member(cfg, comp, texts, ys, n_classes, seed, cache)
    t1 = time.perf_counter()
    val, test = (np.asarray(member.estimator.predict_proba(X[part]), dtype=np.float32) for part in ("val", "test"))
    t2 = time.perf_counter()
    assert val.shape == (len(texts["val"]), n_classes), f"val probabilities {val.shape}, expected {n_classes} columns"
    score = metrics.score(comp.metric, ys["val"], val, comp.multilabel)
    row = {**info, "fit_secs": t1 - t0, "predict_secs": t2 - t1, comp.metric: score}
    with open(log_path, "w") as log:
        log.write(json.dumps(row) + "\n")
    print(f"  {cfg.kind}: {info['n_features']} features, fit {t1 - t0:.0f}s, predict {t2 - t1:.0f}s, "
          f"val {comp.metric} {score:.4f}")
    return {"val": val, "test": test, "score": score, "history": [row], "model": member,
            **{k: row[k] for k in row if "secs" in k}}
