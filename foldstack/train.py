"""train stage: one base model on one fold -> that fold's validation and test predictions.

Reads  models/<m>.yaml, data/competition.yaml, data/processed/{train,test}.parquet + classes.json, folds/folds.csv,
       the model's augmented sets features/<set>.parquet, and with --pseudo a round's features/pseudo_r<r>.parquet
       and its shared cache under --cache-dir (built by foldstack.cache first under `make folds`; else here)
Writes <out-dir>/fold<k>.npz   val_idx [n_val] (rows of train.parquet), val [n_val, C], test [n_test, C]
       <out-dir>/fold<k>.json  validation score, best epoch, timings, per-epoch history
       <out-dir>/fold<k>.log   one JSON line per epoch, written as training goes
       <out-dir>/fold<k>.safetensors | .joblib   the fold's fitted model (foldstack.fold_models; keep_models: false
                               skips it), read by `make predict` and `make export`
Run    python -m foldstack.train --model=models/minilm_bilstm.yaml --fold=0 --out-dir=folds/minilm_bilstm \
           [--pseudo=features/pseudo_r1.parquet] [--epochs=1 --max_len=128 ...]   (overrides are checked like the
           YAML's keys)

A fresh model is built for every fold. Only rows outside fold k train it; only fold k's original rows are
validated and predicted for the OOF. Pseudo-labelled test rows join fold k's training only when their `fold` is k
(see foldstack.pseudo); transformers train on their probabilities when the file has them (labels: soft), classical
models always on the hard labels.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, config
from . import fold_models
from .errors import one_line_errors
from .folds import read_fold_ids, training_mask
from .io import atomic_path, read_augmented, save_json
from .labels import classes_json, join_targets, read_pseudo, targets, training_rows
from .text import text_column


def fit_transformer(cfg, comp, texts: dict, ys: dict, n_classes: int, log_path: Path, seed: int,
                    cache=None) -> dict:
    """Tokenize (or look the texts up in the frozen-layer cache), build a fresh encoder + head, fine-tune, predict.
    texts/ys keyed by train / val / test."""
    import torch

    from .batching import encode
    from .encoder import build_model, load_tokenizer
    from .trainer import FoldData, fit, init_label_priors
    tokenizer = load_tokenizer(cfg.backbone)  # one tokenizer for train, validation and test
    if cache is None:
        ids = {part: encode(tokenizer, texts[part], cfg.max_len, cfg.truncation) for part in texts}
    else:
        ids = {part: cache.rows(texts[part]) for part in texts}
    torch.manual_seed(seed)  # the head's initialisation
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg, n_classes).to(device)
    if comp.multilabel:
        init_label_priors(model, ys["train"])
    data = FoldData(ids["train"], ys["train"], ids["val"], ys["val"], ids["test"])
    res = fit(model, data, cfg, comp.metric, comp.multilabel, tokenizer.pad_token_id, log_path, seed)
    res["model"] = res.pop("weights")  # the best epoch's state dict
    return res


def fit_classical(cfg, comp, texts: dict, ys: dict, n_classes: int, log_path: Path, seed: int, cache=None) -> dict:
    from .classical import fit_predict
    return fit_predict(cfg, comp, texts, ys, n_classes, log_path, seed, cache)


def extra_rows(extra: pd.DataFrame | None, train: pd.DataFrame, fold_of: np.ndarray, fold: int) -> np.ndarray:
    """Positions in `extra` (augmented rows, keyed by src_id) whose source row is on fold `fold`'s training side.

    An augmented copy of a validation row would let the model see that row in disguise: it is dropped here.
    """
    if extra is None or extra.empty:
        return np.zeros(0, dtype=np.int64)
    training_ids = set(train["id"][training_mask(fold_of, fold)])
    return np.flatnonzero(extra["src_id"].isin(training_ids).to_numpy())


def run_fold(cfg, comp, train: pd.DataFrame, test: pd.DataFrame, fold_of: np.ndarray, fold: int,
             n_classes: int, log_path: Path, extra: pd.DataFrame | None = None,
             pseudo: pd.DataFrame | None = None, cache=None) -> tuple[np.ndarray, dict]:
    """Split, fit and predict one fold; returns the validation row positions and the fit's result.

    `extra` holds training-only rows (augmented copies: src_id + text columns); each takes its source's label.
    `pseudo` holds training-only test rows (id, fold, labels); fold `fold` takes those whose `fold` is `fold`.
    """
    column = text_column(cfg)
    y = targets(train, n_classes, comp.multilabel)
    tr, val = training_mask(fold_of, fold), np.flatnonzero(fold_of == fold)
    train_texts, train_y = train[column][tr].tolist(), y[tr]
    if extra is not None:
        extra = extra.iloc[extra_rows(extra, train, fold_of, fold)]
        train_texts += extra[column].tolist()
        train_y = np.concatenate([train_y, y[pd.Index(train["id"]).get_indexer(extra["src_id"])]])
    if pseudo is not None:
        texts_p, y_p = training_rows(pseudo, test, fold, column, n_classes, comp.multilabel,
                                     soft=cfg.kind == "transformer")  # classical models fit hard labels only
        train_texts, train_y = train_texts + texts_p, join_targets(train_y, y_p, n_classes)
    texts = {"train": train_texts, "val": train[column].iloc[val].tolist(), "test": test[column].tolist()}
    ys = {"train": train_y, "val": y[val]}
    fit_fn = fit_transformer if cfg.kind == "transformer" else fit_classical
    seeds = [s + fold for s in cfg.seeds] or [cfg.seed + fold]
    runs = [fit_fn(cfg, comp, texts, ys, n_classes, log_path.with_suffix(f".s{i}.log") if i else log_path, s,
                   cache) for i, s in enumerate(seeds)]
    return val, average_seeds(runs, comp, ys["val"])


def average_seeds(runs: list[dict], comp, val_y: np.ndarray) -> dict:
    """One fit's result, or several seeds' probabilities averaged (scored again); per-seed scores are kept."""
    if len(runs) == 1:
        return runs[0]
    from . import metrics
    val = np.mean([r["val"] for r in runs], axis=0)
    return {**runs[0], "val": val, "test": np.mean([r["test"] for r in runs], axis=0),
            "score": metrics.score(comp.metric, val_y, val, comp.multilabel),
            "seed_scores": [r["score"] for r in runs], "model": [r.get("model") for r in runs],
            "history": [r["history"] for r in runs]}


def open_cache(cfg, train: pd.DataFrame, test: pd.DataFrame, extra: pd.DataFrame | None, root: Path,
               n_classes: int):
    """The model's cache (hidden_cache.open_for_model; `make folds` built it first with foldstack.cache), or None."""
    if not config.shares_cache(cfg):  # (before importing hidden_cache, which imports torch)
        return None
    from .hidden_cache import model_texts, open_for_model
    t0 = time.perf_counter()
    cache = open_for_model(cfg, model_texts(cfg, train, test, extra), root, n_classes)
    if cache is not None and cfg.kind == "transformer":
        print(f"  frozen-layer cache {cache.path.name}: {cache.meta['bytes'] / 2**20:.0f} MiB, built in "
              f"{cache.meta['build_secs']:.0f}s, opened in {time.perf_counter() - t0:.1f}s")
    return cache


def torch_threads() -> int | None:
    """torch's thread count when this fold ran torch (a transformer, embed_lr's encoder), else None."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch else None


def write_fold(out: Path, fold: int, val_idx: np.ndarray, res: dict, summary: dict) -> None:
    """fold<k>.json, then fold<k>.npz (the Make target) last: a fold whose model is kept has it on disk first."""
    save_json(out / f"fold{fold}.json", summary)
    with atomic_path(out / f"fold{fold}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, val_idx=val_idx, val=res["val"].astype(np.float32), test=res["test"].astype(np.float32))


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=config.model_keys_help())
    ap.add_argument("--model", required=True, help="models/<name>.yaml")
    ap.add_argument("--fold", type=int, required=True, help="the validation fold (0 .. n_folds-1)")
    ap.add_argument("--out-dir", required=True, help="folds/<name>")
    config.add_path_options(ap, "competition", "processed", "folds")
    ap.add_argument("--features", default="features", help="where augmented sets <name>.parquet live")
    ap.add_argument("--pseudo", default=None, help="features/pseudo_r<r>.parquet: extra training rows per fold")
    ap.add_argument("--cache-dir", default="features/cache",
                    help="frozen-layer caches (models with freeze_layers > 0), one directory per key")
    args, overrides = ap.parse_known_args(argv)
    cfg = config.load(config.Model, args.model, config.parse_overrides(overrides))
    comp = config.load(config.Competition, args.competition)
    if config.uses_encoder(cfg):  # (the classical members never import torch: a second of each of their folds)
        from .encoder import check_backbone
        check_backbone(cfg, args.model)
    processed, out = Path(args.processed), Path(args.out_dir)
    train, test = pd.read_parquet(processed / "train.parquet"), pd.read_parquet(processed / "test.parquet")
    classes = classes_json(processed)["classes"]
    fold_of = read_fold_ids(args.folds, train["id"])
    pseudo = read_pseudo(args.pseudo, test["id"], len(classes), comp.multilabel) if args.pseudo else None
    extra = read_augmented(cfg.augment, Path(args.features))
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.model).stem
    n_pseudo = 0 if pseudo is None else int((pseudo["fold"] == args.fold).sum())
    print(f"train {name} fold {args.fold}: {(fold_of != args.fold).sum()} train / {(fold_of == args.fold).sum()} "
          f"val rows, {len(test)} test rows" + (f", {n_pseudo} pseudo rows" if pseudo is not None else ""))
    start = time.perf_counter()
    cache = open_cache(cfg, train, test, extra, Path(args.cache_dir), len(classes))
    val_idx, res = run_fold(cfg, comp, train, test, fold_of, args.fold, len(classes), out / f"fold{args.fold}.log",
                            extra, pseudo, cache)
    fitted = res.pop("model", None)
    if cfg.keep_models and fitted is not None:
        fold_models.save(fitted, out, args.fold)  # replaces whatever an earlier run of this fold kept
    else:
        fold_models.remove(out, args.fold)
    summary = {k: v for k, v in res.items() if k not in ("val", "test")}
    summary.update(model=name, fold=args.fold, metric=comp.metric, config_hash=config.config_hash(cfg),
                   version=__version__, secs=time.perf_counter() - start, threads=torch_threads(),
                   cpu_count=os.cpu_count(), pseudo=args.pseudo, n_pseudo=n_pseudo)
    write_fold(out, args.fold, val_idx, res, summary)
    print(f"train {name} fold {args.fold}: {comp.metric} {res['score']:.4f} in {summary['secs']:.0f}s")


if __name__ == "__main__":
    main()
