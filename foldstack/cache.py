"""cache stage: a model's shared cache, built once before its folds (foldstack.hidden_cache).

Reads  models/<m>.yaml, data/competition.yaml, data/processed/{train,test}.parquet + classes.json and the model's
       augmented sets features/<set>.parquet (the texts the folds will meet)
Writes <cache-dir>/<key>/ (the frozen-layer cache of a transformer with freeze_layers > 0) or
       <cache-dir>/pooled-*.npy (embed_lr's embeddings), unless a run already built it, then
       --out (features/cache/<m>.json): which cache the model's folds read, its size and build time
Run    python -m foldstack.cache --model=models/minilm_bilstm.yaml --out=features/cache/minilm_bilstm.json

`make folds` runs this as a job of its own, and the model's folds depend on its output. Were the first fold to
build the cache, the other folds started beside it would wait on its lock with their cores idle (on 20news: 5.5
min for embed_lr's table, 2 min for the frozen layers); as a job, Make runs other members beside it instead.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from . import config
from .errors import ConfigError, one_line_errors
from .hidden_cache import model_texts, open_for_model
from .io import read_augmented, save_json
from .labels import classes_json


def describe(name: str, cache, texts: list[str]) -> dict:
    """What --out records: only what depends on the cache's content, so an unchanged cache re-runs no fold."""
    meta = getattr(cache, "meta", None)  # a frozen-layer cache's; embed_lr's table is one .npy file
    return {"model": name, "cache": cache.path.name, "texts": len(texts),
            "bytes": meta["bytes"] if meta else cache.path.stat().st_size,
            "build_secs": round(meta["build_secs"], 1) if meta else None}


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="models/<name>.yaml (a model with a cache: config.shares_cache)")
    ap.add_argument("--out", required=True, help="features/cache/<name>.json: the cache the folds read")
    config.add_path_options(ap, "competition", "processed")
    ap.add_argument("--features", default="features", help="where augmented sets <name>.parquet live")
    ap.add_argument("--cache-dir", default="features/cache", help="where caches live, one per key")
    args = ap.parse_args(argv)
    cfg = config.load(config.Model, args.model)
    if not config.shares_cache(cfg):
        raise ConfigError(f"{args.model}: this model has no shared cache (freeze_layers: 0, or a classical kind)")
    from .encoder import check_backbone
    check_backbone(cfg, args.model)
    processed = Path(args.processed)
    train, test = pd.read_parquet(processed / "train.parquet"), pd.read_parquet(processed / "test.parquet")
    texts = model_texts(cfg, train, test, read_augmented(cfg.augment, Path(args.features)))
    t0 = time.perf_counter()
    cache = open_for_model(cfg, texts, Path(args.cache_dir), len(classes_json(processed)["classes"]))
    info = describe(Path(args.model).stem, cache, texts)
    save_json(args.out, info)
    print(f"cache {info['model']}: {info['cache']}, {len(texts)} texts, {info['bytes'] / 2**20:.0f} MiB, ready in "
          f"{time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
