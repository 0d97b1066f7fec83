"""lengths: the training texts' token-length distribution, and the max_len / truncation it recommends.

Reads  data/processed/train.parquet (the text column), the backbone's tokenizer (default: the installed MiniLM)
Writes data/processed/lengths.json   percentiles, share of texts cut at each max_len, the recommendation
Run    python -m foldstack.lengths --train=data/processed/train.parquet --out=data/processed/lengths.json \
           [--backbone=minilm --n-folds=5 --epochs=2 --budget-min=60]   (make prep runs it after prep)

The recommendation: the smallest of 64 / 128 / 256 / 384 / 512 tokens that holds 90% of the texts whole, lowered
while a k-fold run of the transformer would exceed the time budget; head_tail truncation (first quarter + last
three quarters, Sun et al. 2019) when more than 10% of the texts are still cut, else head. The time estimate uses
fine-tuning throughput measured on 2 CPU cores in fp32 (MiniLM-L6 + BiLSTM: TOKENS_PER_S, docs/performance.md); a
bf16 CPU or a GPU is faster, and freeze_layers divides it further (measured on the demo, fp32: 1.9x with 3 of
MiniLM's 6 layers frozen, 2.8x with 4).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import one_line_errors
from .io import save_json

CHOICES = (64, 128, 256, 384, 512)
TOKENS_PER_S = 2000  # MiniLM-L6 + BiLSTM, full fine-tuning, fp32, 2 cores (demo texts: 40 samples/s x ~52 tokens)


def token_lengths(texts: list[str], tokenizer) -> np.ndarray:
    """Tokens per text, special tokens included, nothing cut."""
    ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.array([len(i) for i in ids])


def epoch_minutes(lengths: np.ndarray, max_len: int, n_folds: int) -> float:
    """Minutes of training for one epoch of every fold (each fold trains on (k-1)/k of the rows)."""
    tokens = np.minimum(lengths, max_len).sum() * (n_folds - 1)
    return float(tokens / TOKENS_PER_S / 60)


def recommend(lengths: np.ndarray, n_folds: int, epochs: int, budget_min: float, limit: int = 512) -> dict:
    """max_len, truncation and the estimate behind them (see the module docstring)."""
    choices = [c for c in CHOICES if c <= limit] or [limit]
    max_len = next((c for c in choices if np.mean(lengths <= c) >= 0.9), choices[-1])
    while max_len > choices[0] and epochs * epoch_minutes(lengths, max_len, n_folds) > budget_min:
        max_len = choices[choices.index(max_len) - 1]
    cut = float(np.mean(lengths > max_len))
    return {"max_len": max_len, "truncation": "head_tail" if cut > 0.1 else "head", "cut_share": cut,
            "est_minutes": epochs * epoch_minutes(lengths, max_len, n_folds), "epochs": epochs,
            "budget_min": budget_min, "n_folds": n_folds}


def report(lengths: np.ndarray, rec: dict) -> str:
    pct = {p: int(np.percentile(lengths, p)) for p in (50, 90, 95, 99)}
    lines = [f"lengths: {len(lengths)} training texts, tokens p50 {pct[50]}  p90 {pct[90]}  p95 {pct[95]}  "
             f"p99 {pct[99]}  max {lengths.max()}",
             "  max_len: share of texts cut, est. minutes per epoch of all folds (fp32, 2 cores, freeze_layers 0): "
             + "  ".join(f"{c}: {np.mean(lengths > c):.0%} {epoch_minutes(lengths, c, rec['n_folds']):.0f} min"
                         for c in CHOICES),
             f"  recommended for a transformer member: max_len: {rec['max_len']}  truncation: {rec['truncation']}  "
             f"({rec['cut_share']:.0%} cut; ~{rec['est_minutes']:.0f} min for {rec['epochs']} epoch(s) x all folds "
             f"on 2 CPU cores in fp32, budget {rec['budget_min']:.0f} min)"]
    return "\n".join(lines)


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="data/processed/train.parquet")
    ap.add_argument("--out", required=True, help="where the JSON report goes")
    ap.add_argument("--backbone", default="minilm", help="whose tokenizer counts the tokens")
    ap.add_argument("--n-folds", type=int, default=5, help="folds the estimate assumes")
    ap.add_argument("--epochs", type=int, default=2, help="epochs the estimate assumes")
    ap.add_argument("--budget-min", type=float, default=60.0, help="minutes the transformer's k-fold run may take")
    args = ap.parse_args(argv)
    from .encoder import load_tokenizer
    from .text import FIELD_SEP
    texts = pd.read_parquet(args.train, columns=["text"])["text"].str.replace(FIELD_SEP, " ").tolist()
    tokenizer = load_tokenizer(args.backbone)
    lengths = token_lengths(texts, tokenizer)
    rec = recommend(lengths, args.n_folds, args.epochs, args.budget_min, tokenizer.model_max_length)
    print(report(lengths, rec))
    save_json(Path(args.out), {"percentiles": {str(p): float(np.percentile(lengths, p)) for p in (50, 90, 95, 99)},
                               "max": int(lengths.max()), "cut": {str(c): float(np.mean(lengths > c)) for c in CHOICES},
                               "recommended": rec, "backbone": args.backbone})


if __name__ == "__main__":
    main()
