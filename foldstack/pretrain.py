"""pretrain stage: continue masked-LM training of a backbone on the competition's own texts (train + test, no labels).

Within-task pretraining (Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?") adapts the encoder to
the competition's vocabulary and style before fine-tuning; it uses no label, so it is allowed on the test texts too.

Reads  models/pretrain/<name>.yaml (config.Pretrain's keys), data/processed/{train,test}.parquet (the text column
       only: the labels are never read)
Writes models/pretrain/<name>/          a backbone directory (config, weights as safetensors, tokenizer) that a model
                                        YAML names as `backbone: models/pretrain/<name>`
       models/pretrain/<name>/done.json steps, losses, timings (the Make target, written last)
       models/pretrain/<name>.ckpt/     the resume point every `save_every` steps (removed when done)
Run    python -m foldstack.pretrain --config=models/pretrain/minilm_mlm.yaml --train=data/processed/train.parquet \
           --test=data/processed/test.parquet --out-dir=models/pretrain/minilm_mlm      (or: make pretrain)

An interrupted run resumes from its last checkpoint with the same batches and masks it would have drawn: the data
order and the masking are seeded per step, so a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import config
from .config import Pretrain
from .errors import one_line_errors
from .io import atomic_path
from .text import text_column


def corpus_texts(train: pd.DataFrame, test: pd.DataFrame, cfg: Pretrain) -> list[str]:
    """The unlabelled texts to pretrain on: only the chosen text column is read."""
    column = text_column(cfg)
    texts = train[column].tolist() + (test[column].tolist() if cfg.include_test else [])
    return [t for t in texts if t.strip()]


def step_batch(seqs: list[np.ndarray], step: int, cfg: Pretrain, collator) -> dict:
    """The batch of optimizer step `step`: rows and masks drawn from generators seeded by (seed, step)."""
    rng = np.random.default_rng([cfg.seed, step])
    idx = rng.choice(len(seqs), size=min(cfg.batch_size, len(seqs)), replace=False)
    torch.manual_seed(cfg.seed * 1_000_003 + step)  # the collator's masking draws from torch's generator
    return collator([{"input_ids": seqs[i].tolist()} for i in idx])


def mlm_head(model):
    """The masked-LM head module of a *ForMaskedLM model (BERT: cls, RoBERTa / MPNet and most others: lm_head)."""
    head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
    if head is None:
        raise ValueError(f"{type(model).__name__}: no masked-LM head (cls / lm_head) found")
    return head


def mlm_loss(model, batch: dict) -> torch.Tensor:
    """Cross-entropy at the masked positions only. The head's vocabulary projection (30k outputs for MiniLM) costs
    as much as the encoder per token; running it on the ~15% selected tokens instead of all of them (what the
    model's own forward does) makes a step several times cheaper, with the same loss."""
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    selected = batch["labels"] != -100
    logits = mlm_head(model)(hidden[selected])
    return torch.nn.functional.cross_entropy(logits.float(), batch["labels"][selected])


def run_key(cfg: Pretrain, seqs: list[np.ndarray]) -> str:
    """What a resume point must match: the config and the token ids it trains on (so a re-run prep or another
    backbone starts over)."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    for s in seqs:
        h.update(s.tobytes())
    return h.hexdigest()


def load_checkpoint(ckpt: Path, key: str, parts: dict) -> tuple[int, list]:
    """(next step, loss history) from a resume point of the same run (`key`); (0, []) otherwise. `parts` maps
    names to the objects whose state_dict was saved (model, optimizer, scheduler, scaler)."""
    state_file = ckpt / "state.pt"
    if not state_file.exists():
        return 0, []
    state = torch.load(state_file, weights_only=True)
    if state["key"] != key:
        print(f"  {ckpt}: made by another config or other texts, starting over")
        return 0, []
    for name, obj in parts.items():
        obj.load_state_dict(state[name])
    print(f"  resuming at step {state['step']}")
    return state["step"], state["losses"]


def save_checkpoint(ckpt: Path, step: int, losses: list, key: str, parts: dict) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "losses": losses, "key": key, **{name: obj.state_dict() for name, obj in parts.items()}}
    with atomic_path(ckpt / "state.pt") as tmp:
        torch.save(state, tmp)


def build(cfg: Pretrain):
    """(tokenizer, masked-LM model, collator). A backbone saved without an MLM head gets a fresh one (tied to the
    word embeddings, as BERT's is)."""
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling
    from .encoder import load_tokenizer, resolve_backbone
    tokenizer = load_tokenizer(cfg.backbone)
    torch.manual_seed(cfg.seed)  # a missing MLM head is initialised from torch's generator
    model = AutoModelForMaskedLM.from_pretrained(resolve_backbone(cfg.backbone))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability,
                                               pad_to_multiple_of=8, return_tensors="pt")
    return tokenizer, model, collator


def pretrain(cfg: Pretrain, texts: list[str], out_dir: Path, log=print) -> dict:
    """Masked-LM training for cfg.steps steps, resumable; writes the backbone directory; returns the summary."""
    from .batching import encode
    from .optim import make_scheduler, no_decay
    from .trainer import amp_dtype, autocast
    tokenizer, model, collator = build(cfg)
    seqs = encode(tokenizer, texts, cfg.max_len, cfg.truncation)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    dtype = amp_dtype(cfg.amp, device)
    named = list(model.named_parameters())
    decay = [p for n, p in named if not no_decay(n, p)]
    rest = [p for n, p in named if no_decay(n, p)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg.steps, cfg.warmup)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    ckpt = out_dir.with_name(out_dir.name + ".ckpt")
    key, parts = run_key(cfg, seqs), {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    if scaler is not None:  # fp16 on CUDA: the loss scale is part of the state
        parts["scaler"] = scaler
    start, losses = load_checkpoint(ckpt, key, parts)
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        batch = {k: v.to(device) for k, v in step_batch(seqs, step, cfg, collator).items()}
        with autocast(device, dtype):
            loss = mlm_loss(model, batch)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer) if scaler else optimizer.step()
        if scaler:
            scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(ckpt, step + 1, losses, key, parts)
            log(f"  step {step + 1}/{cfg.steps}: MLM loss {np.mean(losses[-cfg.save_every:]):.4f}")
    secs = time.perf_counter() - t0
    write_backbone(model, tokenizer, out_dir)
    summary = {"steps": cfg.steps, "texts": len(seqs), "first_loss": float(np.mean(losses[:20])),
               "last_loss": float(np.mean(losses[-20:])), "secs_this_run": secs, "resumed_at": start,
               "config": asdict(cfg)}
    return summary  # main removes the resume point once done.json is written


def write_backbone(model, tokenizer, out_dir: Path) -> None:
    """save_pretrained into a temporary directory, then swap it in (done.json is written after, by main)."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # safetensors
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=config.keys_epilog("models/pretrain/<name>.yaml", ("", Pretrain),
                                                           overrides=True))
    ap.add_argument("--config", required=True, help="models/pretrain/<name>.yaml")
    ap.add_argument("--train", required=True, help="data/processed/train.parquet (its text column only)")
    ap.add_argument("--test", required=True, help="data/processed/test.parquet (read when include_test)")
    ap.add_argument("--out-dir", required=True, help="the backbone directory to write: models/pretrain/<name>")
    args, overrides = ap.parse_known_args(argv)
    cfg = config.load(Pretrain, args.config, config.parse_overrides(overrides))
    from .encoder import BackboneError, resolve_backbone
    try:
        resolve_backbone(cfg.backbone)
    except BackboneError as err:
        raise config.ConfigError(f"{args.config}: key 'backbone': {err}") from None
    column = text_column(cfg)
    train, test = (pd.read_parquet(p, columns=[column]) for p in (args.train, args.test))
    texts = corpus_texts(train, test, cfg)
    out = Path(args.out_dir)
    print(f"pretrain {out.name}: masked-LM on {len(texts)} texts, {cfg.steps} steps of {cfg.batch_size}")
    summary = pretrain(cfg, texts, out)
    with atomic_path(out / "done.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    shutil.rmtree(out.with_name(out.name + ".ckpt"), ignore_errors=True)
    print(f"pretrain {out.name}: MLM loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f} "
          f"in {summary['secs_this_run']:.0f}s")


if __name__ == "__main__":
    main()
