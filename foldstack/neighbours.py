"""neighbours stage: every train and test text -> its nearest texts, for transductive smoothing.

Reads  data/processed/{train,test}.parquet (the joined `text` column); with --embed-model also the embed_lr model's
       YAML and its pooled sentence embeddings of its text variant (`text` or `text_lemma`), from the cache its folds
       built (features/cache: foldstack.cache; the cache's key also covers its augmented sets features/<set>.parquet)
Writes features/neighbours_k<k>.npz  idx int32 [n_train + n_test, k]: row i's nearest other rows by TF-IDF cosine,
                                    nearest first (train rows 0..n_train-1, then the test rows); sim float32 [.., k]:
                                    their cosine similarity; n_train, n_test; text_sha (to refuse a stale graph)
       features/neighbours_k<k>_<model>.npz  (--embed-model) the same by sentence-embedding cosine, plus
                                    train_embeddings float32 [n_train, H] (predict embeds only the new texts) and
                                    model_hash (the embed_lr config's, as its manifest records it)
Run    python -m foldstack.neighbours --k=10 --out=features/neighbours_k10.npz
       python -m foldstack.neighbours --k=10 --embed-model=models/embed_lr.yaml \
           --out=features/neighbours_k10_embed_lr.npz
       (make submit builds them from ensemble.yaml's neighbours_k; the second only with an embed_lr member)

The ensemble stage (ensemble.yaml `neighbours`, `neighbours_embed`) moves each member's probabilities for a row
toward the vote of its nearest rows: a train row votes its label, a row being predicted votes its own prediction.
Published 20 Newsgroups results above ~0.89 are transductive (BertGCN builds a graph over train and test
documents); this is the cheap form of the same idea: replies quoting a post, cross-posts and threads sit next to each
other in TF-IDF space, and posts on one topic in other words sit next to each other in embedding space.

Honesty: a row of held-out fold k is smoothed only with what fold k's model could know at test time: the labels of
the other folds' rows, fold k's own predictions for its held-out rows, and fold k's predictions for the test rows.
Fold k's labels never reach fold k's OOF rows. A test row votes with every train label and the test predictions.
"""
from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config
from .errors import one_line_errors
from .text import text_column


@dataclass(frozen=True)
class Graph:
    """One neighbour graph and how far its vote moves a prediction."""
    idx: np.ndarray    # [n_train + n_test, >= k] nearest rows, nearest first
    sim: np.ndarray    # their similarities in [0, 1]; 0 casts no vote
    alpha: float       # the share of the vote in the smoothed prediction
    k: int             # neighbours that vote
    power: float       # a vote weighs similarity ** power


def text_sha(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:16]


def build(texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(idx, sim) [len(texts), k]: each text's k most similar other texts by TF-IDF cosine, nearest first.
    Fewer than k + 1 texts: the missing places point at the row itself with similarity 0 (they cast no vote)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import NearestNeighbors

    from .io import InputError
    n = len(texts)
    # Words and bigrams, log-scaled counts; words in over half the texts say nothing about topic. min_df=2 drops
    # typos and ids that only lengthen the vectors, except on tiny data where it could empty the vocabulary.
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2 if n >= 100 else 1,
                          max_df=0.5 if n >= 100 else 1.0, dtype=np.float32)
    try:
        X = vec.fit_transform(texts)
    except ValueError as err:  # sklearn: "empty vocabulary" when no text has a word of two characters
        raise InputError(f"no words to build a neighbour graph from ({err}); set neighbours: 0 in "
                         f"ensemble.yaml") from None
    m = min(k + 1, n)
    dist, idx = NearestNeighbors(n_neighbors=m, metric="cosine", algorithm="brute").fit(X).kneighbors(X)
    sim = np.clip(1.0 - dist, 0.0, 1.0).astype(np.float32)
    out_idx = np.tile(np.arange(n, dtype=np.int32)[:, None], (1, k))
    out_sim = np.zeros((n, k), dtype=np.float32)
    for i in range(n):  # drop the row itself wherever it ranks (exact duplicates may rank before it)
        keep = idx[i] != i
        got = idx[i][keep][:k]
        out_idx[i, :len(got)], out_sim[i, :len(got)] = got, sim[i][keep][:k]
    return out_idx, out_sim


def build_dense(E: np.ndarray, k: int, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(idx, sim) as `build`, from dense embeddings [n, H] by cosine (exact; equal similarities: the lower row
    first, so training's graph and predict's pick the same voters)."""
    E = E / np.clip(np.linalg.norm(E, axis=1, keepdims=True), 1e-12, None)
    n = len(E)
    m = min(k, n - 1)
    chunk = chunk or max(1, 2 ** 23 // n)  # rows per chunk: a float64 [chunk, n] block of ~64 MB
    out_idx = np.tile(np.arange(n, dtype=np.int32)[:, None], (1, k))
    out_sim = np.zeros((n, k), dtype=np.float32)
    tie = np.arange(n) * 2.0 ** -45  # below float32's resolution of a cosine: it only orders equal ones
    for s in range(0, n, chunk):
        S = E[s:s + chunk] @ E.T
        D = tie - S.astype(np.float64)  # ascending = most similar first
        D[np.arange(len(D)), np.arange(s, s + len(D))] = np.inf  # never a row's own neighbour
        if m < 1:
            continue
        top = np.argpartition(D, m - 1, axis=1)[:, :m]
        top = np.take_along_axis(top, np.argsort(np.take_along_axis(D, top, 1), axis=1), 1)
        out_idx[s:s + chunk, :m] = top
        out_sim[s:s + chunk, :m] = np.clip(np.take_along_axis(S, top, 1), 0.0, 1.0)
    return out_idx, out_sim


def vote(rows: np.ndarray, values: np.ndarray, idx: np.ndarray, sim: np.ndarray, k: int, power: float,
         own: np.ndarray) -> np.ndarray:
    """The similarity-weighted mean of `values` over each row's k neighbours; `own` where no neighbour is similar
    at all (an empty text), so such a row keeps its prediction."""
    w = sim[rows, :k].astype(np.float64) ** power  # power > 0: a place with similarity 0 (padding) never votes
    total = w.sum(1, keepdims=True)
    agg = np.empty((len(rows), values.shape[1]))
    step = max(1, 2 ** 24 // (k * values.shape[1]))  # rows per chunk: the gathered votes stay within ~128 MB
    for s in range(0, len(rows), step):
        agg[s:s + step] = np.einsum("rk,rkc->rc", w[s:s + step], values[idx[rows[s:s + step], :k]])
    return np.where(total > 0, agg / np.maximum(total, 1e-12), own)


def smooth_oof(oof: np.ndarray, fold_of: np.ndarray, fold_tests: list[np.ndarray], y: np.ndarray,
               graphs: list[Graph]) -> np.ndarray:
    """A member's OOF [n_train, C], each fold's rows moved toward their neighbours' votes in every graph (each by its
    alpha): the other folds' labels (y one-hot or 0/1 [n_train, C]), fold k's OOF rows and fold k's test predictions
    fold_tests[k]."""
    out = oof.copy()
    for k_fold, test_k in enumerate(fold_tests):
        held = fold_of == k_fold
        values = np.concatenate([np.where(held[:, None], oof, y), test_k])
        rows = np.flatnonzero(held)
        out[rows] = mix(oof[rows], rows, values, graphs)
    return out


def smooth_test(test: np.ndarray, y: np.ndarray, graphs: list[Graph]) -> np.ndarray:
    """A member's test predictions [n_test, C] moved toward the vote of every train label and test prediction in
    every graph. Linear in `test`, so smoothing the folds' mean equals the mean of the smoothed folds."""
    n = len(y)
    return mix(test, np.arange(n, n + len(test)), np.concatenate([y.astype(np.float64), test]), graphs)


def mix(own: np.ndarray, rows: np.ndarray, values: np.ndarray, graphs: list[Graph]) -> np.ndarray:
    """(1 - sum of alphas) * own + each graph's alpha * its vote."""
    out = (1 - sum(g.alpha for g in graphs)) * own
    for g in graphs:
        out = out + g.alpha * vote(rows, values, g.idx, g.sim, g.k, g.power, own)
    return out


def one_hot(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Class indices [n] -> one-hot [n, C]; a 0/1 matrix (multi-label) is returned as floats."""
    if y.ndim == 2:
        return y.astype(np.float64)
    out = np.zeros((len(y), n_classes))
    out[np.arange(len(y)), y] = 1.0
    return out


def load(path: Path, texts: list[str], n_train: int, k: int,
         model_hash: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(idx, sim) of a graph file (features/neighbours_k<k>[_<model>].npz), which must have been built from `texts`
    (train then test rows) with at least k neighbours per row, and an embedding graph by the embed_lr config
    `model_hash`; InputError otherwise."""
    from .io import InputError
    if not path.exists():
        raise InputError(f"{path} not found: ensemble.yaml's neighbours needs it (make {path})")
    with np.load(path) as z:
        built = f"{int(z['n_train'])} train + {int(z['n_test'])} test rows, {z['idx'].shape[1]} neighbours each"
        if (int(z["n_train"]), int(z["n_test"])) != (n_train, len(texts) - n_train) or \
                str(z["text_sha"]) != text_sha(texts) or z["idx"].shape[1] < k:
            raise InputError(f"{path}: built for other texts or a smaller neighbours_k ({built}; now "
                             f"{n_train} + {len(texts) - n_train}, k {k}); delete it and re-run make submit")
        if model_hash is not None and str(z.get("model_hash")) != model_hash:
            raise stale_embeddings(path, n_train)
        return z["idx"], z["sim"]


def graph_path(k: int, model: str | None = None) -> Path:
    """Where a workspace keeps a graph: features/neighbours_k<k>.npz (TF-IDF) or ..._<model>.npz (embeddings)."""
    return Path("features") / (f"neighbours_k{k}.npz" if model is None else f"neighbours_k{k}_{model}.npz")


def load_train_embeddings(path: Path, n_train: int, model_hash: str) -> np.ndarray:
    """An embedding graph file's train rows [n_train, H], which must come from the model config `model_hash` (its
    manifest's config_hash); InputError otherwise."""
    from .io import InputError
    if not path.exists():
        raise InputError(f"{path} not found: the blend smooths over embed_lr embeddings (make submit builds it)")
    with np.load(path) as z:
        if str(z.get("model_hash")) != model_hash or len(z["train_embeddings"]) != n_train:
            raise stale_embeddings(path, n_train)
        return z["train_embeddings"]


def stale_embeddings(path: Path, n_train: int):
    from .io import InputError
    return InputError(f"{path}: not the embeddings of these {n_train} train rows by the member's current config; "
                      f"delete it and re-run make submit (and export a bundle again)")


def read_texts(path: Path) -> list[str]:
    """The joined `text` column of a processed table (prep's); InputError when the file is missing."""
    import pandas as pd

    from .io import InputError
    if not path.exists():
        raise InputError(f"{path} not found: run make prep first")
    return pd.read_parquet(path, columns=["text"])["text"].tolist()


def embed_lr_table(model_path: Path, processed: Path, features: Path, cache_dir: Path):
    """(The embed_lr model's pooled embeddings [n_train + n_test, H] of the train and test rows, in its text
    variant, read from the cache its folds built (foldstack.cache) or built now with the same key; its config
    hash, as its folds' manifest records it)."""
    import pandas as pd

    from .errors import ConfigError
    from .hidden_cache import model_texts, open_pooled
    from .io import read_augmented
    cfg = config.load(config.Model, model_path)
    if cfg.kind != "embed_lr":
        raise ConfigError(f"{model_path}: kind {cfg.kind!r}: ensemble.yaml's neighbours_embed_model must name an "
                          f"embed_lr model")
    column = text_column(cfg)
    train, test = (pd.read_parquet(processed / f"{part}.parquet", columns=[column]) for part in ("train", "test"))
    pooled = open_pooled(cfg.options, model_texts(cfg, train, test, read_augmented(cfg.augment, features)), cache_dir)
    return pooled.embed(train[column].tolist() + test[column].tolist()), config.config_hash(cfg)


@one_line_errors
def main(argv=None) -> None:
    import time

    from .io import atomic_path
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, required=True, help="neighbours per row (ensemble.yaml neighbours_k)")
    config.add_path_options(ap, "processed")
    ap.add_argument("--embed-model", default=None, help="models/<m>.yaml of kind embed_lr: neighbours by its "
                    "sentence embeddings instead of TF-IDF (ensemble.yaml neighbours_embed_model)")
    ap.add_argument("--features", default="features", help="--embed-model: where its augmented sets live")
    ap.add_argument("--cache-dir", default="features/cache", help="--embed-model: where its embedding cache lives")
    ap.add_argument("--out", required=True, help="the graph to write (features/neighbours_k<k>[_<model>].npz)")
    args = ap.parse_args(argv)
    texts = [read_texts(Path(args.processed) / f"{s}.parquet") for s in ("train", "test")]
    start, extra = time.perf_counter(), {}
    if args.embed_model:
        E, model_hash = embed_lr_table(Path(args.embed_model), Path(args.processed), Path(args.features),
                                       Path(args.cache_dir))
        idx, sim = build_dense(E, args.k)
        # predict embeds only the new texts; the hash ties the train rows' embeddings to the member's config
        extra = {"train_embeddings": E[:len(texts[0])], "model_hash": model_hash}
    else:
        idx, sim = build(texts[0] + texts[1], args.k)
    with atomic_path(Path(args.out)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, idx=idx, sim=sim, n_train=len(texts[0]), n_test=len(texts[1]),
                     text_sha=text_sha(texts[0] + texts[1]), **extra)
    print(f"neighbours: {args.out} ({len(idx)} rows x {args.k} neighbours, "
          f"{time.perf_counter() - start:.0f}s)")


if __name__ == "__main__":
    main()
