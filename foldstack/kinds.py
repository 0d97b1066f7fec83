"""Each classical model kind's options: the `params:` mapping of a models/<name>.yaml, one frozen dataclass per kind.

Below the config loader (config.py reads a model YAML's `params:` into the kind's class here, so an unknown or
mistyped key stops at load with one line naming the file and `params.<key>`) and below the stage that fits them
(classical.py). Only dataclasses and their checks live here: no numpy, no scikit-learn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Tfidf:
    """Vectorizer options shared by the TF-IDF kinds. Each vectorizer is fitted on the fold's training texts only."""
    word_ngrams: tuple[int, ...] = (1, 2)        # [min_n, max_n] of word n-grams
    char_ngrams: tuple[int, ...] | None = (2, 5)  # [min_n, max_n] of char_wb n-grams; null: words only
    min_df: int = 2                # drop n-grams in fewer training documents
    max_df: float = 1.0            # drop n-grams in a larger fraction of documents
    max_features: int | None = 300_000  # per vectorizer, the most frequent n-grams
    sublinear_tf: bool = True      # 1 + log(tf): long documents do not drown short ones
    char_max_chars: int | None = 4000  # characters per document seen by the char vectorizer (its cost is linear)

    def check(self) -> list[tuple[str, str]]:
        bad = []
        for key in ("word_ngrams", "char_ngrams"):
            value = getattr(self, key)
            if value is not None and (len(value) != 2 or not 1 <= value[0] <= value[1]):
                bad.append((key, "must be [min_n, max_n] with 1 <= min_n <= max_n"))
        if self.min_df < 1 or not 0 < self.max_df <= 1:
            bad.append(("min_df", "min_df must be >= 1 and max_df in (0, 1]"))
        return bad


@dataclass(frozen=True)
class TfidfLR(Tfidf):
    """kind: tfidf_lr."""
    C: float = 10.0                # inverse L2 strength; TF-IDF rows are unit-norm, so it wants to be large
    solver: str = "liblinear"      # liblinear: one-vs-rest, dual coordinate descent (fast on sparse n-grams);
    #                                lbfgs / saga: one multinomial model (multi-label: always one-vs-rest)
    class_weight: str | None = None  # null | balanced
    max_iter: int = 300            # solver iterations
    n_jobs: int = 2                # one-vs-rest models fitted in parallel

    def check(self) -> list[tuple[str, str]]:
        bad = super().check()
        if self.solver not in ("liblinear", "lbfgs", "saga"):
            bad.append(("solver", "must be liblinear, lbfgs or saga"))
        if self.class_weight not in (None, "balanced"):
            bad.append(("class_weight", "must be null or balanced"))
        if self.C <= 0:
            bad.append(("C", "must be > 0"))
        return bad


@dataclass(frozen=True)
class TfidfLGBM(Tfidf):
    """kind: tfidf_lgbm. LightGBM on the TF-IDF matrix (sparse), or on its TruncatedSVD projection."""
    char_ngrams: tuple[int, ...] | None = None
    max_features: int | None = 50_000
    svd_components: int = 0        # 0: trees on the sparse TF-IDF columns; > 0: on a dense SVD projection
    n_estimators: int = 300        # upper bound; early stopping picks the round (see fit_lgbm)
    early_stopping_rounds: int = 30  # 0: always n_estimators rounds
    learning_rate: float = 0.1     # shrinkage per tree
    num_leaves: int = 15           # leaves per tree
    min_child_samples: int = 10    # rows per leaf, at least
    colsample_bytree: float = 0.3  # share of columns each tree sees
    subsample: float = 0.8         # share of rows each tree sees (bagging every round)
    reg_lambda: float = 1.0        # L2 penalty on leaf values
    max_bin: int = 63              # coarser histograms: faster, and TF-IDF values need few bins
    n_jobs: int = 1                # LightGBM's OpenMP threads; on 2 busy cores 2 threads ran up to 30x slower

    def check(self) -> list[tuple[str, str]]:
        bad = super().check()
        for key in ("n_estimators", "num_leaves", "min_child_samples", "max_bin"):
            if getattr(self, key) < 1:
                bad.append((key, "must be at least 1"))
        for key in ("colsample_bytree", "subsample"):
            if not 0 < getattr(self, key) <= 1:
                bad.append((key, "must be in (0, 1]"))
        return bad


@dataclass(frozen=True)
class TfidfSVM(Tfidf):
    """kind: tfidf_svm. LinearSVC has no probabilities: CalibratedClassifierCV fits it on `calibration_folds`
    splits of the fold's training rows and maps its margins to probabilities on the held-out split (sigmoid)."""
    C: float = 0.5                 # inverse L2 strength (hinge loss: smaller than LogisticRegression's)
    class_weight: str | None = None  # null | balanced
    calibration_folds: int = 3     # inner splits of the fold's training rows for the calibration
    calibration: str = "sigmoid"   # sigmoid (Platt) | isotonic (needs many rows per class)
    max_iter: int = 2000           # LinearSVC iterations

    def check(self) -> list[tuple[str, str]]:
        bad = super().check()
        if self.C <= 0:
            bad.append(("C", "must be > 0"))
        if self.calibration_folds < 2:
            bad.append(("calibration_folds", "must be at least 2"))
        if self.calibration not in ("sigmoid", "isotonic"):
            bad.append(("calibration", "must be sigmoid or isotonic"))
        if self.class_weight not in (None, "balanced"):
            bad.append(("class_weight", "must be null or balanced"))
        return bad


@dataclass(frozen=True)
class NBSVM(Tfidf):
    """kind: nbsvm. Per class c: r = log((alpha + sum of c's rows) / |.|_1) - log((alpha + sum of the others) /
    |.|_1) over the features; a binary LogisticRegression on X * r; multi-class probabilities renormalised."""
    char_ngrams: tuple[int, ...] | None = None
    word_ngrams: tuple[int, ...] = (1, 3)
    alpha: float = 1.0             # smoothing of the feature counts
    C: float = 4.0                 # inverse L2 strength of each class's LogisticRegression
    max_iter: int = 300            # solver iterations
    n_jobs: int = 2                # classes fitted in parallel

    def check(self) -> list[tuple[str, str]]:
        bad = super().check()
        if self.alpha <= 0 or self.C <= 0:
            bad.append(("alpha", "alpha and C must be > 0"))
        return bad


@dataclass(frozen=True)
class EmbedLR:
    """kind: embed_lr. The encoder is not fine-tuned: each text's mean-pooled last hidden state is computed once
    (features/cache, shared by every fold) and a LogisticRegression is fitted per fold."""
    backbone: str = "minilm"       # minilm (installed), a local directory (e.g. a `make pretrain` output) or Hub id
    max_len: int = 128             # tokens per text
    truncation: str = "head_tail"  # head | tail | head_tail
    normalize: bool = True         # unit-length embeddings (sentence-transformers models are trained that way)
    C: float = 10.0                # inverse L2 strength of the LogisticRegression
    max_iter: int = 1000           # solver iterations
    batch_size: int = 64           # texts per encoder batch

    def check(self) -> list[tuple[str, str]]:
        bad = []
        if self.truncation not in ("head", "tail", "head_tail"):
            bad.append(("truncation", "must be head, tail or head_tail"))
        if self.max_len < 8 or self.C <= 0:
            bad.append(("max_len", "max_len must be >= 8 and C > 0"))
        return bad


PARAMS = {"tfidf_lr": TfidfLR, "tfidf_lgbm": TfidfLGBM, "tfidf_svm": TfidfSVM, "nbsvm": NBSVM, "embed_lr": EmbedLR}
Params = Union[tuple(PARAMS.values())]  # any kind's options
