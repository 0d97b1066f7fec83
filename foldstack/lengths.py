"""lengths: the training texts' token-length distribution, and the max_len / truncation it recommends.

Reads  data/processed/train.parquet (the text column), each transformer YAML's backbone tokenizer (or MiniLM's; for a
       `make pretrain` backbone not yet written, the one it continues)
Writes data/processed/lengths.json   per transformer YAML: percentiles, share cut at each max_len, the
                                     recommendation and what its time estimate assumes
Run    python -m foldstack.lengths --train=data/processed/train.parquet --out=data/processed/lengths.json \
           [--models models/*.yaml --n-folds=5 --budget-min=60]   (make prep runs it after prep)

The recommendation: the smallest of 64 / 128 / 256 / 384 / 512 tokens that holds 90% of the texts whole, lowered
while a k-fold run of the transformer would exceed the time budget; head_tail truncation (first quarter + last
three quarters, Sun et al. 2019) when more than 10% of the texts are still cut, else head. One recommendation per
transformer YAML in --models (its tokenizer, epochs, seeds, freeze_layers, amp), or one for the installed MiniLM
with 2 epochs when there is none. The time estimate starts from fine-tuning throughput measured on 2 CPU cores in
fp32 (MiniLM-L6 + BiLSTM: TOKENS_PER_S, docs/performance.md) and scales it by the layers that still train (a
frozen layer's outputs come from the cache once for all folds), by their width against MiniLM's, and by native
bf16 when the model's amp uses it on this CPU (AMX's or AVX512-BF16's). A GPU is much faster than any of it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import config
from .errors import one_line_errors
from .io import save_json

CHOICES = (64, 128, 256, 384, 512)
# MiniLM-L6 + BiLSTM, full fine-tuning, fp32, two folds at a time on 2 cores (one thread each, as `make -j2 folds`
# runs them), in training tokens per second of both: full-data folds on AMD EPYCs (docs/performance.md, 2026-12-05)
# - the demo's MiniLM at 64 tokens, 1,776-1,858 (AVX2-only Zen 3); 20news at 128 tokens with 2 frozen layers,
# 2,724 (the same CPU; ~2,810 capped to AVX2 on another EPYC), which TIME_SHARE puts at 1,852 unfrozen. (A probe on
# 480 texts had said 2,400: 20news's estimate at 128 tokens was 26 min an epoch against 33 measured.) The cores
# differ: a Xeon capped to AVX2 trained 20news at 128 tokens ~28% faster than this (session 13), so there the
# estimate runs high.
TOKENS_PER_S = 1850
# bf16 against that fp32 rate by the CPU's bf16 units. AVX512-BF16 without AMX (an EPYC): ~1.4, from the bench
# (70.0 against 50.6 samples/s; 137 against 91 GFLOP/s of its GEMM work) and from full 20news folds at 128 tokens
# (15.5-16.4 samples/s, freeze 3's rate scaled by TIME_SHARE to freeze 2, against 11.7 in fp32); with it a Reuters
# epoch at 256 tokens is estimated at 19.5 min against 19.0 measured (session 19). AMX (a Xeon): 2.7, which keeps
# the estimates that full AMX runs checked (within 10% at 128 tokens, 14-22% high at 256): their bf16 folds
# measured ~2.1x the probe's fp32 rate of 2,400.
BF16_SPEEDUP = {"AMX": 2.7, "AVX512-BF16": 1.4}
# Training time per token against full fine-tuning, by the share of the encoder's layers that still train (a frozen
# layer's outputs come from the cache). The probe (bench/freeze_speed.py), fp32, 2 / 3 / 4 of 6 layers frozen:
# 1.46x / 1.87x / 2.57x; 5 frozen: 4.06x (a 2-thread demo probe); none training: the head alone, a guess. Not
# linear in the layers: the embeddings' gradient and the optimizer's step over their parameters go too.
TRAINED_SHARE = (0.0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 1.0)
TIME_SHARE = (0.15, 0.25, 0.39, 0.53, 0.68, 1.0)
MINILM = {"layers": 6, "width": 384, "ffn": 1536}


@dataclass(frozen=True)
class Speed:
    """What the time estimate assumes of the transformer and the CPU."""
    layers: int = 6       # encoder layers
    frozen: int = 0       # of them frozen (freeze_layers)
    width: int = 384      # hidden size
    ffn: int = 1536       # intermediate size
    bf16: str = ""        # autocast to bf16 on a CPU that runs it natively: its kind (BF16_SPEEDUP); "": fp32

    def tokens_per_s(self) -> float:
        """Training tokens per second: TOKENS_PER_S scaled by the model's size against MiniLM's (multiply-adds per
        token), by the share of its layers that still train, and by native bf16 (AMX's or AVX512-BF16's)."""
        def per_token(layers, width, ffn):
            return layers * (4 * width * width + 2 * width * ffn)
        size = per_token(self.layers, self.width, self.ffn) / per_token(**MINILM)
        share = np.interp((self.layers - self.frozen) / self.layers, TRAINED_SHARE, TIME_SHARE)
        return TOKENS_PER_S / (size * share) * (BF16_SPEEDUP[self.bf16] if self.bf16 else 1.0)

    def shown(self) -> str:
        precision = f"bf16 on {self.bf16}" if self.bf16 else "fp32"
        return f"{precision}, 2 cores, freeze_layers {self.frozen} of {self.layers}"


def token_lengths(texts: list[str], tokenizer) -> np.ndarray:
    """Tokens per text, special tokens included, nothing cut."""
    ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.array([len(i) for i in ids])


def epoch_minutes(lengths: np.ndarray, max_len: int, n_folds: int, speed: Speed = Speed()) -> float:
    """Minutes of training for one epoch of every fold (each fold trains on (k-1)/k of the rows)."""
    tokens = np.minimum(lengths, max_len).sum() * (n_folds - 1)
    return float(tokens / speed.tokens_per_s() / 60)


def recommend(lengths: np.ndarray, n_folds: int, epochs: int, budget_min: float, limit: int = 512,
              speed: Speed = Speed()) -> dict:
    """max_len, truncation and the estimate behind them (see the module docstring); `epochs` counts every seed's."""
    choices = [c for c in CHOICES if c <= limit] or [limit]
    max_len = next((c for c in choices if np.mean(lengths <= c) >= 0.9), choices[-1])
    while max_len > choices[0] and epochs * epoch_minutes(lengths, max_len, n_folds, speed) > budget_min:
        max_len = choices[choices.index(max_len) - 1]
    cut = float(np.mean(lengths > max_len))
    return {"max_len": max_len, "truncation": "head_tail" if cut > 0.1 else "head", "cut_share": cut,
            "est_minutes": epochs * epoch_minutes(lengths, max_len, n_folds, speed), "epochs": epochs,
            "budget_min": budget_min, "n_folds": n_folds, "assumes": speed.shown()}


def summary(lengths: np.ndarray, rec: dict, speed: Speed, n_folds: int, backbone: str, counted_with: str) -> dict:
    """One model's entry of lengths.json: percentiles, per max_len the share cut and the training minutes per epoch;
    `counted_with` the backbone whose tokenizer counted them (another before `make pretrain` writes `backbone`)."""
    return {"percentiles": {str(p): float(np.percentile(lengths, p)) for p in (50, 90, 95, 99)},
            "count": len(lengths), "max": int(lengths.max()),
            "cut": {str(c): float(np.mean(lengths > c)) for c in CHOICES},
            "epoch_minutes": {str(c): epoch_minutes(lengths, c, n_folds, speed) for c in CHOICES},
            "recommended": rec, "backbone": backbone, "counted_with": counted_with}


def report(summaries: dict[str, dict]) -> str:
    """Per model (its tokenizer's lengths): the percentiles, the minutes each max_len would take, the recommendation."""
    lines = []
    for name, s in summaries.items():
        pct, rec = {p: int(v) for p, v in s["percentiles"].items()}, s["recommended"]
        minutes = (f"{c}: {s['cut'][c]:.0%} {s['epoch_minutes'][c]:.0f} min" for c in map(str, CHOICES))
        lines += [f"lengths: {s['count']} training texts, tokens p50 {pct['50']}  p90 {pct['90']}  p95 {pct['95']}  "
                  f"p99 {pct['99']}  max {s['max']}",
                  f"  {name} ({rec['assumes']}): max_len: share cut, est. minutes of training per epoch of all "
                  f"folds: " + "  ".join(minutes),
                  f"  recommended for {name}: max_len: {rec['max_len']}  truncation: {rec['truncation']}  "
                  f"({rec['cut_share']:.0%} cut; ~{rec['est_minutes']:.0f} min for {rec['epochs']} epoch(s) x all "
                  f"folds on 2 CPU cores, budget {rec['budget_min']:.0f} min)"]
    return "\n".join(lines)


def model_speed(cfg: config.Model) -> Speed:
    """The Speed a transformer YAML implies on this CPU (its backbone's shape, freeze_layers, amp)."""
    import torch
    from .encoder import backbone_config
    from .trainer import amp_dtype, cpu_flags, cpu_has_bf16
    shape = backbone_config(cfg.backbone)
    # the estimate is for this CPU; fp16 is CUDA's alone, so a GPU config's amp counts as fp32 here, and bf16 forced
    # on a CPU that emulates it (slower than fp32) at the fp32 rate
    bf16 = cfg.amp != "fp16" and amp_dtype(cfg.amp, torch.device("cpu")) == torch.bfloat16 and cpu_has_bf16()
    return Speed(shape.num_hidden_layers, min(cfg.freeze_layers, shape.num_hidden_layers), shape.hidden_size,
                 shape.intermediate_size, bf16_kind(cpu_flags()) if bf16 else "")


def bf16_kind(flags: set[str] | None) -> str:
    """A native-bf16 CPU's key in BF16_SPEEDUP: AMX where the flags show it, else AVX512-BF16's lower rate (also for
    a CPU whose flags cannot be read, e.g. ARM: the estimate then errs long)."""
    return "AMX" if flags and "amx_bf16" in flags else "AVX512-BF16"


def transformers_in(paths: list[str]) -> dict[str, config.Model]:
    """The transformer YAMLs among `paths` by name; the installed MiniLM at 2 epochs when there is none."""
    cfgs = {Path(p).stem: config.load(config.Model, p) for p in paths}
    return {n: c for n, c in cfgs.items() if c.kind == "transformer"} or {"a MiniLM member": config.Model()}


def speeds_of(named: dict[str, config.Model], counted: dict[str, config.Model], paths: dict[str, str]) -> dict:
    """model_speed of each model as counted (its backbone, or the one a `make pretrain` output not yet written
    continues); reading the backbone's config is where one that resolves nowhere stops, in one line naming the YAML
    it is written in. A max_len the backbone cannot hold is left to the recommendation."""
    speeds = {}
    for name, cfg in counted.items():
        where = paths.get(name, "the default MiniLM")
        if cfg.backbone != named[name].backbone:
            where = f"{config.pretrain_dir(named[name].backbone)}.yaml (the pretraining behind {where})"
        try:
            speeds[name] = model_speed(cfg)
        except config.ConfigError as err:
            raise config.ConfigError(f"{where}: {err}") from None
    return speeds


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="data/processed/train.parquet")
    ap.add_argument("--out", required=True, help="where the JSON report goes")
    ap.add_argument("--models", nargs="*", default=[], help="model YAMLs: one recommendation per transformer")
    ap.add_argument("--n-folds", type=int, default=5, help="folds the estimate assumes")
    ap.add_argument("--budget-min", type=float, default=60.0, help="minutes the transformer's k-fold run may take")
    args = ap.parse_args(argv)
    from .encoder import load_tokenizer
    from .text import FIELD_SEP
    texts = pd.read_parquet(args.train, columns=["text"])["text"].str.replace(FIELD_SEP, " ").tolist()
    named = transformers_in(args.models)
    # prep runs before `make pretrain`: such a backbone is counted as the one it continues
    cfgs = {n: replace(c, backbone=config.shape_source(c.backbone)) for n, c in named.items()}
    speeds = speeds_of(named, cfgs, {Path(p).stem: p for p in args.models})  # first: it checks the backbones
    tokenizers = {b: load_tokenizer(b) for b in {c.backbone for c in cfgs.values()}}
    by_backbone = {b: token_lengths(texts, t) for b, t in tokenizers.items()}
    counted = {n: by_backbone[c.backbone] for n, c in cfgs.items()}
    recs = {n: recommend(counted[n], args.n_folds, c.epochs * max(1, len(c.seeds)), args.budget_min,
                         tokenizers[c.backbone].model_max_length, speeds[n]) for n, c in cfgs.items()}
    summaries = {n: summary(counted[n], recs[n], speeds[n], args.n_folds, named[n].backbone, c.backbone)
                 for n, c in cfgs.items()}
    print(report(summaries))
    save_json(Path(args.out), summaries)


if __name__ == "__main__":
    main()
