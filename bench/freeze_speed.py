"""What freeze_layers saves: training and prediction rates of one model with 0..L frozen layers, side by side.

Reads  a processed train.parquet (default the demo's), the model YAML (default models/minilm_bilstm.yaml)
Writes bench/results/freeze_speed.json, and prints one table
Run    .venv/bin/python bench/freeze_speed.py [--train=... --model=... --rows=1200 --steps=24 --frozen 0 2 3 4 5]
       [--amp=off] [--reps=2]

For each N: the frozen-layer cache is built over `rows` texts (its time and size are reported), then the same rows
train `steps` optimizer steps from the cache (N > 0) or from token ids (N = 0) after 3 warm-up steps, then the
rows are predicted. Settings are interleaved over `reps` repetitions (this machine's speed drifts over minutes) and
each rate is the median; the ratios are against N = 0 measured in the same repetition.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from foldstack import config, trainer  # noqa: E402
from foldstack.batching import encode, train_width_multiple  # noqa: E402
from foldstack.encoder import build_model, load_tokenizer  # noqa: E402
from foldstack.hidden_cache import open_or_build, unique_texts  # noqa: E402
from foldstack.optim import make_optimizer  # noqa: E402
from foldstack.text import text_column  # noqa: E402


def measure(cfg, texts: list[str], y: np.ndarray, steps: int, cache_root: Path) -> dict:
    """Cache build (N > 0), training samples/s over `steps` steps after 3 warm-up steps, prediction rows/s."""
    tok = load_tokenizer(cfg.backbone)
    t0 = time.perf_counter()
    cache = open_or_build(cfg, unique_texts(texts), cache_root, int(y.max()) + 1) if cfg.freeze_layers else None
    build = time.perf_counter() - t0
    rows = cache.rows(texts) if cache else encode(tok, texts, cfg.max_len, cfg.truncation)
    torch.manual_seed(0)
    model = build_model(cfg, int(y.max()) + 1).train()
    opt, dtype = make_optimizer(model, cfg), trainer.amp_dtype(cfg.amp, torch.device("cpu"))
    batches = trainer.train_batches(trainer.row_lengths(rows), cfg.batch_size, np.random.default_rng(0))
    batches = (batches * (1 + (steps + 3) // len(batches)))[:steps + 3]  # few rows: go round again
    n, start, multiple = 0, None, train_width_multiple("cpu", dtype)
    for i, idx in enumerate(batches):
        if i == 3:
            n, start = 0, time.perf_counter()
        with trainer.autocast(torch.device("cpu"), dtype):
            logits = model(**trainer.make_batch(rows, idx, tok.pad_token_id, cfg.max_len, multiple))
        trainer.loss_fn(logits, torch.as_tensor(y[idx]), False).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        n += len(idx)
    train_rate = n / (time.perf_counter() - start)
    t0 = time.perf_counter()
    trainer.predict(model, rows, cfg, tok.pad_token_id, torch.device("cpu"), dtype, False)
    return {"train_samples_per_s": train_rate, "predict_rows_per_s": len(texts) / (time.perf_counter() - t0),
            "cache_build_secs": build, "cache_mib": cache.meta["bytes"] / 2**20 if cache else 0.0,
            "amp": str(dtype) if dtype else "fp32"}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="data/processed/train.parquet", help="a processed train.parquet")
    ap.add_argument("--model", default=str(ROOT / "models" / "minilm_bilstm.yaml"), help="the model YAML")
    ap.add_argument("--rows", type=int, default=1200, help="texts cached, trained on and predicted")
    ap.add_argument("--steps", type=int, default=24, help="timed optimizer steps")
    ap.add_argument("--frozen", type=int, nargs="+", default=[0, 2, 3, 4, 5], help="freeze_layers values")
    ap.add_argument("--amp", default=None, help="override the YAML's amp (off: fp32, the no-bf16 CPU's setting)")
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "freeze_speed.json"))
    args = ap.parse_args(argv)
    cfg = config.load(config.Model, args.model, {"amp": args.amp} if args.amp else {})
    df = pd.read_parquet(args.train).head(args.rows)
    column = text_column(cfg)
    texts, y = df[column].tolist(), df["label"].to_numpy()
    runs: dict[int, list[dict]] = {n: [] for n in args.frozen}
    for _ in range(args.reps):
        for n in args.frozen:
            with tempfile.TemporaryDirectory() as tmp:
                runs[n].append(measure(replace(cfg, freeze_layers=n), texts, y, args.steps, Path(tmp)))
    rows = []
    for n, rs in runs.items():
        med = {k: float(np.median([r[k] for r in rs])) for k in rs[0] if k != "amp"}
        ratio = float(np.median([r["train_samples_per_s"] / b["train_samples_per_s"] for r, b in zip(rs, runs[0])])) \
            if 0 in runs else float("nan")
        rows.append({"freeze_layers": n, **med, "train_speedup_vs_0": ratio, "amp": rs[0]["amp"]})
    print(f"freeze_speed: {Path(args.model).name}, {len(texts)} rows, max_len {cfg.max_len}, {torch.get_num_threads()} "
          f"threads, amp {rows[0]['amp']}, median of {args.reps}")
    print(f"{'frozen':>6} {'train/s':>8} {'x vs 0':>7} {'predict/s':>10} {'cache s':>8} {'cache MiB':>9}")
    for r in rows:
        print(f"{r['freeze_layers']:>6} {r['train_samples_per_s']:>8.1f} {r['train_speedup_vs_0']:>7.2f} "
              f"{r['predict_rows_per_s']:>10.0f} {r['cache_build_secs']:>8.1f} {r['cache_mib']:>9.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
