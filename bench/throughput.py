"""Training and inference throughput of foldstack's fold trainer, fp32 vs bf16 autocast, in one run.

Reads  a processed train.parquet (default: the demo's data/processed/train.parquet)
Writes bench/results/throughput.json, and prints a table
Run    .venv/bin/python bench/throughput.py [--train=data/processed/train.parquet] [--steps=20] [--max-len=128]

Same backbone (the installed MiniLM + BiLSTM head), same rows, same step count for every setting; settings are
interleaved (fp32, bf16, fp32, bf16, ...) because this machine's timings drift by 15-40% over minutes.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from foldstack import config, trainer
from foldstack.batching import encode
from foldstack.encoder import build_model, load_tokenizer


def time_training(cfg, ids, y, amp: str, steps: int) -> dict:
    """Samples/s and real (unpadded) tokens/s over `steps` optimizer steps, after one warm-up step."""
    cfg = config.Model(**{**cfg.__dict__, "amp": amp})
    torch.manual_seed(0)
    model = build_model(cfg, int(y.max()) + 1)
    n = cfg.batch_size * (steps + 1)
    data = trainer.FoldData(ids[:n], y[:n], [], y[:0], [])
    dtype = trainer.amp_dtype(amp, torch.device("cpu"))
    optimizer = trainer.make_optimizer(model, cfg)
    state = {"device": torch.device("cpu"), "dtype": dtype, "multilabel": False, "pad_id": 0, "scaler": None,
             "optimizer": optimizer, "scheduler": trainer.make_scheduler(optimizer, steps + 1, 0.0)}
    warm = trainer.FoldData(ids[:cfg.batch_size], y[:cfg.batch_size], [], y[:0], [])
    bar = _NoBar()
    trainer.train_epoch(model, warm, cfg, state, np.random.default_rng(0), bar)
    start = time.perf_counter()
    trainer.train_epoch(model, data, cfg, state, np.random.default_rng(1), bar)
    secs = time.perf_counter() - start
    tokens = sum(len(s) for s in data.train_ids)
    return {"samples_per_s": n / secs, "tokens_per_s": tokens / secs, "secs": secs}


def time_inference(cfg, ids, amp: str, n: int) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg, 3)
    dtype = trainer.amp_dtype(amp, torch.device("cpu"))
    trainer.predict(model, ids[:cfg.eval_batch_size], cfg, 0, torch.device("cpu"), dtype, False)  # warm-up
    start = time.perf_counter()
    probs = trainer.predict(model, ids[:n], cfg, 0, torch.device("cpu"), dtype, False)
    secs = time.perf_counter() - start
    return {"samples_per_s": n / secs, "secs": secs, "argmax": probs.argmax(1)}


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="data/processed/train.parquet")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--infer-rows", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="bench/results/throughput.json")
    args = ap.parse_args(argv)
    cfg = config.Model(backbone="minilm", max_len=args.max_len, batch_size=args.batch_size, eval_batch_size=64,
                       attention_dropout=0.0)
    df = pd.read_parquet(args.train).sample(frac=1.0, random_state=0)
    ids = encode(load_tokenizer("minilm"), df["text"].tolist()[:max(args.infer_rows, 2000)], cfg.max_len, "head")
    y = df["label"].to_numpy()[:len(ids)] if "label" in df else np.zeros(len(ids), dtype=np.int64)
    results = {"fp32": [], "bf16": []}
    infer = {"fp32": [], "bf16": []}
    for _ in range(args.repeats):
        for amp, key in (("off", "fp32"), ("bf16", "bf16")):
            results[key].append(time_training(cfg, ids, y, amp, args.steps))
            infer[key].append(time_inference(cfg, ids, amp, args.infer_rows))
    agree = float((infer["fp32"][0]["argmax"] == infer["bf16"][0]["argmax"]).mean())
    summary = {k: {"train_samples_per_s": float(np.median([r["samples_per_s"] for r in results[k]])),
                   "train_tokens_per_s": float(np.median([r["tokens_per_s"] for r in results[k]])),
                   "infer_samples_per_s": float(np.median([r["samples_per_s"] for r in infer[k]]))}
               for k in results}
    summary.update(settings=vars(args), threads=torch.get_num_threads(), argmax_agreement=agree,
                   peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    print(f"MiniLM-L6 + BiLSTM, batch {args.batch_size} x {args.max_len} tokens, {args.steps} steps, "
          f"median of {args.repeats}, {summary['threads']} threads")
    print(f"{'':6} {'train samples/s':>16} {'train tokens/s':>15} {'infer samples/s':>16}")
    for k in ("fp32", "bf16"):
        s = summary[k]
        print(f"{k:6} {s['train_samples_per_s']:16.1f} {s['train_tokens_per_s']:15.0f} "
              f"{s['infer_samples_per_s']:16.1f}")
    print(f"bf16/fp32: train x{summary['bf16']['train_samples_per_s'] / summary['fp32']['train_samples_per_s']:.2f}"
          f", inference x{summary['bf16']['infer_samples_per_s'] / summary['fp32']['infer_samples_per_s']:.2f}; "
          f"argmax agreement {agree:.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
