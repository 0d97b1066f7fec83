"""The settings bench.py compares, one per worker process: foldstack, trainer (HF), recipe, gemm.

Reads  the spec bench.py passes (--spec=JSON: data path, model YAML, max_len, steps, rows, threads)
Writes the worker's result as JSON to --result
Run    by bench.py (`benchlib.run_isolated`); by hand only to debug one setting:
       .venv/bin/python bench/settings.py --worker=recipe --result=/tmp/r.json \
           --spec='{"train": "data/processed/train.parquet", "n_train": 40, "n_eval": 64, "warm": 1, "steps": 2}'

See bench.py's docstring for what each setting is and how it is timed.
"""
from __future__ import annotations

import sys
import tempfile
import time

import numpy as np
import torch
from transformers import (DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments,
                          get_linear_schedule_with_warmup)

import benchlib
from benchlib import RECIPE_BATCH, RECIPE_LEN, median
from foldstack import trainer
from foldstack.batching import pad_batch
from foldstack.encoder import load_tokenizer

# The baselines load the encoder as transformers does by default (SDPA attention), as foldstack's `attention: auto`
# does; bench/levers.py's attention lever measures the opt-in eager kernel.
BASELINE_ATTENTION = "sdpa"


def worker_foldstack(spec: dict) -> dict:
    rows = benchlib.load_rows(spec)
    cfg = rows.cfg
    model = benchlib.fresh_model(cfg, rows.n_classes)
    dtype = trainer.amp_dtype(cfg.amp, torch.device("cpu"))
    train = benchlib.foldstack_train(model, rows, cfg, dtype, spec["warm"], spec["steps"])
    train_rss = benchlib.peak_rss_gb()
    probs, infer = benchlib.foldstack_predict(model, rows, cfg, dtype)
    return {"train": train, "infer": infer, "quality": benchlib.quality(rows.eval_y, probs),
            "train_rss_gb": train_rss, "peak_rss_gb": benchlib.peak_rss_gb(), "size": benchlib.model_size(model),
            "amp": str(dtype).replace("torch.", "") if dtype else "fp32", "at_cap": rows.at_cap,
            "batch_size": cfg.batch_size, "warm": spec["warm"], "max_len": cfg.max_len,
            "tokenize_secs": rows.tokenize_secs}


class LossOutput(torch.nn.Module):
    """foldstack's Classifier in the shape Trainer expects: forward(**batch) -> {"loss", "logits"}."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids, attention_mask, labels=None):
        logits = self.classifier(input_ids, attention_mask)
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits.float(), labels)
        return {"loss": loss, "logits": logits}


class CountingCollator:
    """Trainer's collator, unchanged, plus each batch's stats (collation order = step order: no loader workers)."""

    def __init__(self, collate):
        self.collate, self.batches = collate, []

    def __call__(self, features):
        batch = self.collate(features)
        mask = batch["attention_mask"]
        self.batches.append(benchlib.batch_stats(mask.sum(1).tolist(), mask.shape[1]))
        return batch


def hf_trainer(model, rows, collator, clock, out_dir: str, total_steps: int) -> Trainer:
    cfg = rows.cfg

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.update()

    # Defaults except what a user must set: where, how many steps, batch sizes, lr, seed, CPU, no saving/reporting.
    args = TrainingArguments(output_dir=out_dir, max_steps=total_steps, per_device_train_batch_size=cfg.batch_size,
                             per_device_eval_batch_size=cfg.eval_batch_size, learning_rate=cfg.lr, seed=cfg.seed,
                             use_cpu=True, save_strategy="no", report_to="none", disable_tqdm=True)
    n = total_steps * cfg.batch_size
    train_set = [{"input_ids": s.tolist(), "labels": int(y)} for s, y in zip(rows.train_ids[:n], rows.train_y[:n])]
    return Trainer(model=LossOutput(model), args=args, data_collator=collator, train_dataset=train_set,
                   callbacks=[StepClock()])


def worker_trainer(spec: dict) -> dict:
    rows = benchlib.load_rows(spec)
    model = benchlib.fresh_model(rows.cfg, rows.n_classes, BASELINE_ATTENTION)
    collator, clock = CountingCollator(DataCollatorWithPadding(load_tokenizer(rows.cfg.backbone))), benchlib.Clock()
    with tempfile.TemporaryDirectory() as out_dir:
        hf = hf_trainer(model, rows, collator, clock, out_dir, spec["warm"] + spec["steps"])
        result = hf.train()
        opt = getattr(hf.optimizer, "optimizer", hf.optimizer)  # accelerate wraps it
        defaults = {"optimizer": type(opt).__name__, "fused": opt.defaults.get("fused"),
                    "weight_decay": sorted({g["weight_decay"] for g in opt.param_groups}),
                    "lr": sorted({g["initial_lr"] for g in opt.param_groups}),
                    "scheduler": type(hf.lr_scheduler).__name__}
        train = {**benchlib.window_rates(clock.stamps, collator.batches, spec["warm"]),
                 "train_loss": result.training_loss}
        train_rss = benchlib.peak_rss_gb()
        eval_set = [{"input_ids": s.tolist(), "labels": int(y)} for s, y in zip(rows.eval_ids, rows.eval_y)]
        hf.predict(eval_set[:64])  # warm-up, as foldstack's
        collator.batches = []
        start = time.perf_counter()
        logits = hf.predict(eval_set).predictions
        infer = benchlib.infer_rates(collator.batches, time.perf_counter() - start)
    probs = torch.softmax(torch.as_tensor(logits).float(), -1).numpy()
    return {"train": train, "infer": infer, "quality": benchlib.quality(rows.eval_y, probs),
            "train_rss_gb": train_rss, "peak_rss_gb": benchlib.peak_rss_gb(), "amp": "fp32",
            "batch_size": rows.cfg.batch_size, "warm": spec["warm"], "trainer_defaults": defaults}


def worker_recipe(spec: dict) -> dict:
    rows = benchlib.load_rows(spec)
    cfg, total = rows.cfg, spec["warm"] + spec["steps"]
    model = benchlib.fresh_model(cfg, rows.n_classes, BASELINE_ATTENTION)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)
    order = np.random.default_rng(cfg.seed).permutation(total * RECIPE_BATCH)  # DataLoader(shuffle=True)'s pass
    clock, batches, losses = benchlib.Clock(), [], []
    model.train()
    for step in range(total):
        idx = order[step * RECIPE_BATCH:(step + 1) * RECIPE_BATCH]
        seqs = [rows.train_ids[i][:RECIPE_LEN] for i in idx]  # the recipe's batches: every row padded (or cut) to 300
        loss = torch.nn.functional.cross_entropy(model(**pad_batch(seqs, rows.pad_id, RECIPE_LEN)),
                                                 torch.as_tensor(rows.train_y[idx]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())  # the recipe logs every step
        batches.append(benchlib.batch_stats([len(s) for s in seqs], RECIPE_LEN))
        clock.update()
    train = {**benchlib.window_rates(clock.stamps, batches, spec["warm"]), "train_loss": float(np.mean(losses))}
    train_rss = benchlib.peak_rss_gb()
    probs, _ = benchlib.foldstack_predict(model, rows, cfg, None)
    return {"train": train, "quality": benchlib.quality(rows.eval_y, probs), "train_rss_gb": train_rss,
            "peak_rss_gb": benchlib.peak_rss_gb(), "amp": "fp32", "batch_size": RECIPE_BATCH, "warm": spec["warm"]}


def worker_gemm(spec: dict) -> dict:
    """The CPU's matmul throughput: an n x n GEMM, best of `reps` after one warm-up, in fp32 and, only where the CPU
    has native bf16 (AVX512-BF16 / AMX), in bf16: emulated bf16 GEMMs are slower than fp32 (a 4096² one ran for
    minutes on an AVX2 CPU) and `amp: auto` never picks them there."""
    n, out = spec["gemm_n"], {}
    kinds = [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if trainer.cpu_has_bf16() else [])
    for name, dtype in kinds:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(a, b)  # oneDNN picks and caches its kernel on the first call
        secs = []
        for _ in range(spec["gemm_reps"]):
            start = time.perf_counter()
            torch.mm(a, b)
            secs.append(time.perf_counter() - start)
        out[name] = {"peak_flops": 2 * n ** 3 / min(secs), "median_flops": 2 * n ** 3 / median(secs)}
    return out


WORKERS = {"foldstack": worker_foldstack, "trainer": worker_trainer, "recipe": worker_recipe, "gemm": worker_gemm}


if __name__ == "__main__":
    if not benchlib.worker_main(WORKERS, sys.argv[1:]):
        sys.exit("usage: settings.py --worker=NAME --spec=JSON --result=FILE (normally run by bench.py)")
