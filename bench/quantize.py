"""Does dynamic int8 quantization pay for a trained transformer member? Speed, argmax agreement and accuracy.

Reads  a workspace's trained member: models/<m>.yaml, folds/<m>/fold0.safetensors, data/processed/{test.parquet,
       classes.json}; optionally a solution CSV (the competition's id and label columns) for accuracy
Writes nothing; prints one table
Run    .venv/bin/python bench/quantize.py --workspace=DIR --member=minilm_bilstm [--rows=512] [--reps=2]
       [--solution=../shared/data/20news/solution.csv]

Fold 0's classifier predicts the first `rows` test rows in fp32 (amp off: int8 dynamic quantization is a CPU fp32
path), then as torch.ao's dynamic int8 quantization of every nn.Linear with per-tensor and with per-channel weight
scales. Settings are interleaved over `reps` repetitions; the speed-up is against fp32 in the same repetition.
Issue 11's bar for shipping it: argmax agreement with fp32 >= 99.5% and measured faster.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from foldstack import config, fold_models, trainer  # noqa: E402
from foldstack.batching import encode  # noqa: E402
from foldstack.encoder import build_model, load_tokenizer  # noqa: E402
from foldstack.text import text_column  # noqa: E402


def quantized(model, per_channel: bool):
    """A copy of `model` with every nn.Linear dynamically quantized to int8 (activations scaled per batch)."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():  # torch.ao's notice that quantization moves to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear: qconfig}, dtype=torch.qint8)


def truth(comp, solution: str | None, ids: list[str], classes: list[str]) -> np.ndarray | None:
    """Class indices of `ids` from the solution file, or None."""
    if not solution:
        return None
    sol = pd.read_csv(solution, sep=comp.sep).set_index(comp.id)[comp.label[0]].astype(str)
    return pd.Index(classes).get_indexer(sol.loc[ids])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True, help="a workspace whose member was trained with keep_models")
    ap.add_argument("--member", default="minilm_bilstm", help="a transformer member: models/<member>.yaml")
    ap.add_argument("--rows", type=int, default=512, help="test rows predicted per setting")
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions")
    ap.add_argument("--solution", default=None, help="CSV with the test rows' true labels, for accuracy")
    args = ap.parse_args(argv)
    ws = Path(args.workspace)
    cfg = config.load(config.Model, ws / "models" / f"{args.member}.yaml", {"amp": "off"})
    test = pd.read_parquet(ws / "data" / "processed" / "test.parquet").iloc[:args.rows]
    classes = json.loads((ws / "data" / "processed" / "classes.json").read_text())["classes"]
    tokenizer = load_tokenizer(cfg.backbone)
    seqs = encode(tokenizer, test[text_column(cfg)].tolist(), cfg.max_len, cfg.truncation)
    model = build_model(cfg, len(classes), pretrained=False)
    model.load_state_dict(fold_models.load(ws / "folds" / args.member / "fold0.safetensors"))
    settings = {"fp32": model, "int8 per-tensor": quantized(model, False), "int8 per-channel": quantized(model, True)}
    cpu, secs, probs = torch.device("cpu"), {k: [] for k in settings}, {}
    for rep in range(args.reps + 1):  # repetition 0 warms up
        for name, m in settings.items():
            start = time.perf_counter()
            probs[name] = trainer.predict(m, seqs, cfg, tokenizer.pad_token_id, cpu, None, False)
            if rep:
                secs[name].append(time.perf_counter() - start)
    comp = config.load(config.Competition, ws / "data" / "competition.yaml")
    y = truth(comp, args.solution, test[comp.id].astype(str).tolist(), classes)
    print(f"{args.member} fold 0, {len(seqs)} test rows, max_len {cfg.max_len}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'setting':18s} {'rows/s':>8s} {'speed-up':>9s} {'agree':>7s} {'accuracy':>9s}")
    for name in settings:
        speed = [f / s for f, s in zip(secs["fp32"], secs[name])]
        agree = float(np.mean(probs[name].argmax(1) == probs["fp32"].argmax(1)))
        acc = f"{np.mean(probs[name].argmax(1) == y):.4f}" if y is not None else "-"
        print(f"{name:18s} {len(seqs) / np.median(secs[name]):8.1f} {np.median(speed):8.2f}x {agree:7.4f} {acc:>9s}")


if __name__ == "__main__":
    main()
