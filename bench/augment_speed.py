"""Preprocessing and augmentation throughput: WordNet lemmatization docs/s, EDA docs/s (1 and N worker
processes) and apertium back-translation sentences/s. bench.py runs it as part of `make bench`.

Reads  a processed train.parquet (default: the demo's data/processed/train.parquet) and, when present,
       ../shared/data/20news/train.csv (subject + body joined as prep joins them; no lemmas needed here)
Writes bench/results/augment.json, and prints a table plus three example texts of each kind per data set
Run    .venv/bin/python bench/augment_speed.py [--train=...] [--news=DIR or ''] [--bt-texts=600] [--workers=2]
           [--max-docs=N]

Lemmatization runs prep's lemmatize_texts on the source texts (docs/s, --workers processes as prep uses).
EDA runs the stage's code (features/augment.yaml's eda section) on every row, each timing in a forked process that
starts as cold as a stage run (empty synonym memo, WordNet caches); one-off start-up (nlpaug imports torch, WordNet
loads) is timed apart. "docs/s" counts source rows per second; lemmatizing the augmented texts (part of the stage)
is timed apart too. Back-translation pipes the sentences of the first --bt-texts non-empty rows through apertium in
one batch; sentences/s counts segments (sentences, long ones cut at max_chars). This machine's timings drift 15-40%
with other jobs: the load average and the CPU seconds actually used (this process + its children) are recorded with
every number.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import time
from pathlib import Path

from benchlib import ROOT, load_texts, timed
from foldstack import augment, backtrans, eda
from foldstack.io import save_json
from foldstack.text import lemmatize_texts


def isolated(fn, *args):
    """fn(*args) in a forked child, so every timing starts as cold (memo, WordNet's caches) as a fresh stage run."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=lambda: send.send(fn(*args)))
    proc.start()
    result = recv.recv()  # before join: a large result would otherwise block the child
    proc.join()
    return result


def docs_rates(n: int, workers: int, secs: float, cpu: float, load: float) -> dict:
    return {"workers": workers, "docs": n, "secs": secs, "docs_per_s": n / secs, "cpu_secs": cpu,
            "docs_per_cpu_s": n / cpu, "load_avg": load}


def time_eda(ids, texts, cfg, workers: int) -> dict:
    rows, secs, cpu, load = timed(eda.augment_texts, ids, texts, cfg, workers)
    return {**docs_rates(len(texts), workers, secs, cpu, load), "copies": len(rows), "rows": rows}


def time_lemmatize(texts, workers: int) -> dict:
    """prep's lemmatizer on the source texts, in a fork of the warmed-up process (WordNet's load is in start-up)."""
    _, secs, cpu, load = timed(lemmatize_texts, texts, workers)
    return docs_rates(len(texts), workers, secs, cpu, load)


def time_backtrans(texts, cfg, n: int) -> dict:
    sample = [t for t in texts if t.strip()][:n]
    segments = list(dict.fromkeys(s for t in sample for f in backtrans.plan(t, cfg.max_chars) for p in f for s in p))
    engine = backtrans.Apertium(tuple(cfg.apertium_modes))
    out, secs, cpu, load_before = timed(backtrans.backtranslate_texts, sample, engine, cfg.max_chars)
    words = sum(len(s.split()) for s in segments)
    return {"texts": len(sample), "sentences": len(segments), "words": words, "secs": secs,
            "sentences_per_s": len(segments) / secs, "words_per_s": words / secs, "cpu_secs": cpu,
            "sentences_per_cpu_s": len(segments) / cpu, "load_avg": load_before,
            "examples": [(a, b) for a, b in zip(sample, out) if a != b]}


def show(pairs, width: int = 240) -> list[dict]:
    """Three examples from different parts of the data: source and augmented text, cut to `width` characters."""
    picks = [pairs[i] for i in sorted({0, len(pairs) // 2, len(pairs) - 1})] if pairs else []
    return [{"kind": kind, "source": src[:width], "augmented": aug[:width]} for kind, src, aug in picks]


def bench_one(name: str, path: Path, args, eda_cfg, bt_cfg) -> dict:
    ids, texts = load_texts(path)
    ids, texts = ids[:args.max_docs], texts[:args.max_docs]
    res = {"data": str(path), "docs": len(texts), "mean_words": sum(len(t.split()) for t in texts) / len(texts)}
    res["lemmatize"] = isolated(time_lemmatize, texts, args.workers)
    runs = [isolated(time_eda, ids, texts, eda_cfg, w) for w in sorted({1, args.workers})]
    rows = runs[-1]["rows"]
    start = time.perf_counter()
    lemmatize_texts([r[2] for r in rows], args.workers)
    res["lemmatize_secs"] = time.perf_counter() - start
    res["eda"] = [{k: v for k, v in r.items() if k != "rows"} for r in runs]
    res["eda_examples"] = show([(f"eda:{op}", texts[pos], aug) for pos, op, aug in rows])
    if shutil.which("apertium"):
        bt = time_backtrans(texts, bt_cfg, args.bt_texts)
        res["backtrans_examples"] = show([("backtrans:apertium", a, b) for a, b in bt.pop("examples")])
        res["backtrans"] = bt
    lem = res["lemmatize"]
    print(f"{name:8s} lemmatize: {lem['docs_per_s']:7.0f} docs/s  ({lem['workers']} worker(s), {lem['secs']:.1f}s; "
          f"{lem['docs_per_cpu_s']:.0f} per CPU-second)")
    for r in res["eda"]:
        print(f"{name:8s} EDA  {r['workers']} worker(s): {r['docs_per_s']:7.0f} docs/s  ({r['docs']} docs, "
              f"{res['mean_words']:.0f} words each, {r['copies']} copies, {r['secs']:.1f}s; "
              f"{r['docs_per_cpu_s']:.0f} per CPU-second; load {r['load_avg']:.1f})")
    print(f"{name:8s} lemmatizing the copies: {res['lemmatize_secs']:.1f}s")
    if "backtrans" in res:
        b = res["backtrans"]
        print(f"{name:8s} apertium: {b['sentences_per_s']:7.0f} sentences/s  ({b['sentences']} sentences, "
              f"{b['words_per_s']:.0f} words/s, {b['texts']} texts, {b['secs']:.1f}s; "
              f"{b['sentences_per_cpu_s']:.0f} per CPU-second of all its processes; load {b['load_avg']:.1f})")
    else:
        print(f"{name:8s} apertium not installed: back-translation not measured ({backtrans.APERTIUM_HINT})")
    for ex in res["eda_examples"] + res.get("backtrans_examples", []):
        print(f"  [{ex['kind']}]\n    source:    {ex['source']}\n    augmented: {ex['augmented']}")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="data/processed/train.parquet", help="processed demo rows")
    ap.add_argument("--news", default=str(ROOT.parent / "shared" / "data" / "20news"),
                    help="20news folder (optional; '' skips it)")
    ap.add_argument("--config", default=str(ROOT / "features" / "augment.yaml"))
    ap.add_argument("--bt-texts", type=int, default=600, help="texts per data set to back-translate")
    ap.add_argument("--workers", type=int, default=2, help="EDA worker processes (also timed with 1)")
    ap.add_argument("--max-docs", type=int, default=None, help="only the first N docs of each set (smoke runs)")
    ap.add_argument("--out", default="bench/results/augment.json")
    args = ap.parse_args(argv)
    eda_cfg = augment.load_config(args.config, "eda")
    bt_cfg = augment.load_config(args.config, "backtrans")
    start = time.perf_counter()
    eda.warm_up()
    results = {"startup_secs": time.perf_counter() - start, "cpu_count": os.cpu_count(),
               "eda_config": eda_cfg.__dict__, "backtrans_config": bt_cfg.__dict__}
    print(f"start-up (nlpaug + torch import, WordNet load): {results['startup_secs']:.1f}s")
    sets = {"demo": Path(args.train), "20news": Path(args.news) if args.news else None}
    for name, path in sets.items():
        if path is not None and path.exists():
            results[name] = bench_one(name, path, args, eda_cfg, bt_cfg)
        else:
            print(f"{name}: {path or 'no path given'} not found, skipped")
    save_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
