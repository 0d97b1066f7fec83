"""`make bench`: foldstack's fold trainer against Hugging Face's Trainer and the recipe's loop, in one run.

Reads  a processed train.parquet (default: the demo's data/processed/train.parquet; another competition's, e.g.
       20news after `make prep` in its workspace, with --train) and models/minilm_bilstm.yaml (--model)
Writes bench/results/bench.json (bench-quick.json with --quick); bench/augment_speed.py writes augment.json and
       augment.log beside it (augment-quick.*); prints one report: settings, inference, GEMM peak, augmentation,
       targets
Run    .venv/bin/python bench/bench.py [--train=...] [--steps=50] [--threads=N] [--reps=3] [--quick]
       (about 18 minutes on 2 cores with --no-augment, more with the augmentation bench; --quick is a smoke run
       of about 2 minutes)

Same backbone (the installed MiniLM + foldstack's BiLSTM head, seeded alike), same token ids (tokenized once by
foldstack at the YAML's max_len, 64 for the demo) and the same first training rows for all three settings:
  foldstack   trainer.train_epoch with make_optimizer (layer-wise lr, head lr, warmup), length-bucketed dynamic
              padding, the YAML's amp (auto: bf16 autocast where the CPU has it), SDPA attention
  trainer     transformers.Trainer with its defaults (fp32, DataCollatorWithPadding, its default AdamW and linear
              schedule without warmup, RandomSampler seeded by `seed`, in-process data loading) training the same
              Classifier with the encoder as transformers loads it (SDPA attention); the YAML's batch size and lr,
              eval batch = foldstack's eval_batch_size
  recipe      the public recipe's loop: every row padded to 300 tokens, batch 10, fp32, a plain shuffled pass,
              torch.optim.AdamW (one lr, torch's defaults), linear schedule, clipping; fewer steps (it is slow),
              so the settings are compared by per-sample rates
Each setting runs in its own process (its peak RSS, ru_maxrss, is its own); repetitions are interleaved (foldstack,
trainer, recipe, gemm, foldstack, ...) because this machine's timing drifts 15-40% over minutes, and each target is
the median of the per-repetition ratios (each repetition's settings ran minutes apart), with those ratios beside it.
A step is timed from the end of the warm-up steps to the end of the last step; tokens/s counts the real (non-pad)
tokens of exactly those steps. Then foldstack and Trainer each train one longer pass (--quality-rows, 6,000) and
score the same 1,000 held-out rows: "equal final quality" is judged there (the timed steps are too early in training
to compare). After the timed steps each model predicts the same held-out rows, as many as the demo's test file has
(2,835): foldstack's predict (length-sorted, on a CPU in batches of at most 2,048 tokens as wide as their longest
row, amp) and Trainer.predict are timed (rows/s); the recipe's model is scored with foldstack's predict in fp32 (its
outputs equal padded-to-300 ones up to rounding), its inference is not timed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import benchlib
from benchlib import RECIPE_BATCH, RECIPE_LEN, median, spread, table

SETTINGS = Path(__file__).resolve().with_name("settings.py")
AUGMENT = Path(__file__).resolve().with_name("augment_speed.py")
# knob: (default, --quick default)
DEFAULTS = {"steps": (50, 3), "recipe_steps": (16, 2), "warm": (3, 1), "reps": (3, 1), "eval_rows": (2835, 64),
            "gemm_n": (4096, 1024), "gemm_reps": (5, 2), "quality_rows": (6000, 96), "quality_eval": (1000, 64)}
# Inference is timed on a test file's worth of held-out rows (the demo's test.csv has 2,835), as `make folds` and
# `make predict` run it: length-sorting pays by the size of what is sorted. Measured on the demo's rows at 64
# tokens: 512 held-out rows still padded 8% after sorting, 2,835 pad 2%; Trainer.predict, in row order, 53-54%.
# "At equal final quality": foldstack's held-out accuracy after one pass may trail Trainer's by at most this
# (about one standard error of a difference of accuracies near 0.83 on 1,000 rows).
QUALITY_TOLERANCE = 0.015
TARGETS = (("training vs recipe loop", "train_vs_recipe", 3.0), ("training vs HF Trainer", "train_vs_trainer", 1.5),
           ("inference vs Trainer.predict", "infer_vs_trainer", 2.0),
           ("peak RSS, Trainer / foldstack", "rss_trainer_over_foldstack", 1.0))
LABELS = {"foldstack": "foldstack ({amp}, bucketed, {malloc})",
          "trainer": "HF Trainer (fp32, dynamic padding)",
          "recipe": f"recipe loop (fp32, pad to {RECIPE_LEN})"}


def plan(args) -> list[tuple[str, dict]]:
    """(worker, spec) for one repetition. All settings read the same rows; each uses only its first ones."""
    batch = benchlib.model_config(vars(args)).batch_size
    n_train = max((args.warm + args.steps) * batch, (args.warm + args.recipe_steps) * RECIPE_BATCH)
    base = {**benchlib.base_spec(args), "n_train": n_train, "n_eval": args.eval_rows, "warm": args.warm}
    return [("foldstack", {**base, "steps": args.steps}), ("trainer", {**base, "steps": args.steps}),
            ("recipe", {**base, "steps": args.recipe_steps}),
            ("gemm", {"threads": args.threads, "gemm_n": args.gemm_n, "gemm_reps": args.gemm_reps})]


def preload(args, worker: str) -> str | None:
    """foldstack's worker runs on the allocator `make folds` uses (--malloc); Trainer and the recipe as their users
    run them, on glibc's."""
    return args.malloc if worker == "foldstack" else None


def run_reps(args) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    start = time.perf_counter()
    for rep in range(args.reps):
        for worker, spec in plan(args):
            benchlib.progress(f"[{time.perf_counter() - start:5.0f}s] rep {rep + 1}/{args.reps}: {worker}")
            runs.setdefault(worker, []).append(benchlib.run_isolated(SETTINGS, worker, spec, preload(args, worker)))
    return runs


def run_quality(args) -> dict[str, dict]:
    """foldstack and Trainer each train one pass over the same --quality-rows rows from the same initial weights,
    then score the same --quality-eval held-out rows: the 'equal final quality' check. The 50 timed steps are too
    early in training to compare quality (warmup, layer-wise lr); the recipe loop is left out (an hour here)."""
    batch = benchlib.model_config(vars(args)).batch_size
    steps = max(2, args.quality_rows // batch)
    spec = {**benchlib.base_spec(args), "n_train": steps * batch, "n_eval": args.quality_eval, "warm": 1,
            "steps": steps - 1}
    runs = {}
    for worker in ("foldstack", "trainer"):
        benchlib.progress(f"quality: {worker}, one pass over {steps * batch} rows")
        runs[worker] = benchlib.run_isolated(SETTINGS, worker, spec, preload(args, worker))
    return runs


def quality_check(runs: dict) -> dict:
    f, t = (runs[w]["quality"] for w in ("foldstack", "trainer"))
    gap = f["val_acc"] - t["val_acc"]
    return {"acc_gap": gap, "tolerance": QUALITY_TOLERANCE, "verdict": "PASS" if gap >= -QUALITY_TOLERANCE else "MISS"}


def run_augment(args) -> dict | None:
    """bench/augment_speed.py (lemmatization, EDA, apertium) in its own process; its printout goes to a log."""
    stem = "augment-quick" if args.quick else "augment"
    out, log = Path(args.out).with_name(f"{stem}.json"), Path(args.out).with_name(f"{stem}.log")
    cmd = [sys.executable, "-u", str(AUGMENT), f"--train={args.train}", f"--out={out}"]  # -u: the log fills as it goes
    if args.quick:
        cmd += ["--max-docs=300", "--bt-texts=20", "--news="]
    benchlib.progress(f"augmentation: {' '.join(cmd[1:])}  (log: {log})")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode:
            benchlib.progress(f"augmentation bench failed: see {log}")
            return None
    return json.loads(out.read_text())


def per_rep_ratios(runs: dict) -> dict[str, list[float]]:
    """The target ratios of each repetition (its settings ran minutes apart, not hours)."""
    f, t, r = runs["foldstack"], runs["trainer"], runs["recipe"]
    rate = lambda run: run["train"]["samples_per_s"]  # noqa: E731
    return {"train_vs_recipe": [rate(a) / rate(c) for a, c in zip(f, r)],
            "train_vs_trainer": [rate(a) / rate(b) for a, b in zip(f, t)],
            "infer_vs_trainer": [a["infer"]["rows_per_s"] / b["infer"]["rows_per_s"] for a, b in zip(f, t)],
            "rss_trainer_over_foldstack": [b["peak_rss_gb"] / a["peak_rss_gb"] for a, b in zip(f, t)]}


def setting_summary(run_list: list[dict]) -> dict:
    """Medians over repetitions (RSS: the largest)."""
    train = {k: median([r["train"][k] for r in run_list]) for k in run_list[0]["train"]}
    out = {"train": train, "batch_size": run_list[0]["batch_size"], "amp": run_list[0]["amp"],
           "malloc": run_list[0]["malloc"],
           "samples_seen": int(run_list[0]["warm"] + train["steps"]) * run_list[0]["batch_size"],
           "train_rss_gb": max(r["train_rss_gb"] for r in run_list),
           "peak_rss_gb": max(r["peak_rss_gb"] for r in run_list),
           "quality": {k: median([r["quality"][k] for r in run_list]) for k in ("val_loss", "val_acc")},
           "load_avg": [r["load_avg"] for r in run_list]}
    if "infer" in run_list[0]:
        out["infer"] = {k: median([r["infer"][k] for r in run_list]) for k in run_list[0]["infer"]}
    return out


def hardware(runs: dict) -> dict:
    """GEMM peaks and foldstack's model FLOP/s as a share of the peak of the precision it trained in (bf16 autocast
    or fp32), per repetition (each with its own GEMM)."""
    size, amp = runs["foldstack"][0]["size"], runs["foldstack"][0]["amp"]
    flops = [benchlib.train_flops_per_s(size, r["train"]) for r in runs["foldstack"]]
    in_use = "bf16" if amp == "bfloat16" else "fp32"
    peaks = {kind: [g[kind]["peak_flops"] for g in runs["gemm"]] for kind in ("fp32", "bf16") if kind in runs["gemm"][0]}
    return {"size": size, "train_flops": median(flops), "precision": in_use,
            "gemm": {kind: median(v) for kind, v in peaks.items()},
            "of_peak": [a / b for a, b in zip(flops, peaks[in_use])],
            "formula": "6 N T + 12 L d sum(len^2); N = non-embedding params (encoder layers + head), T = real "
                       "tokens/s, L layers, d width; padding not counted"}


def summarise(runs: dict, quality: dict, augment: dict | None, args) -> dict:
    ratios = per_rep_ratios(runs)
    targets = {key: {"name": name, "needed": need, "median": median(ratios[key]), "reps": ratios[key],
                     "reps_met": sum(v >= need for v in ratios[key]),
                     "verdict": "PASS" if median(ratios[key]) >= need else "MISS"}
               for name, key, need in TARGETS}
    first = runs["foldstack"][0]
    return {"machine": benchlib.machine(), "args": vars(args), "threads": first["threads"],
            "max_len": first["max_len"], "at_cap": first["at_cap"],
            "settings": {k: setting_summary(runs[k]) for k in ("foldstack", "trainer", "recipe")},
            "hardware": hardware(runs), "targets": targets, "augment": augment, "runs": runs,
            "quality": {"runs": quality, **quality_check(quality)}}


# --- the report ------------------------------------------------------------------------------------------------

def gb(x: float) -> str:
    return f"{x:.2f} GB"


def training_table(s: dict) -> str:
    rows = []
    for key, label in LABELS.items():
        x = s["settings"][key]
        tr, q = x["train"], x["quality"]
        rows.append([label.format(amp=x["amp"], malloc=x["malloc"]), int(tr["steps"]), x["batch_size"],
                     f"{tr['samples_per_s']:.1f}",
                     f"{tr['tokens_per_s']:.0f}", f"{tr['pad_share']:.0%}", gb(x["train_rss_gb"]),
                     gb(x["peak_rss_gb"]), x["samples_seen"], f"{q['val_loss']:.3f}", f"{q['val_acc']:.3f}"])
    header = ["training", "timed steps", "batch", "samples/s", "tokens/s", "padding", "train RSS", "peak RSS",
              "rows seen", "val loss", "val acc"]
    return table(header, rows)


def inference_table(s: dict) -> str:
    rows = []
    labels = {"foldstack": "foldstack predict ({amp}, length-sorted)", "trainer": "Trainer.predict (fp32)"}
    for key, label in labels.items():
        x = s["settings"][key]
        inf = x["infer"]
        rows.append([label.format(amp=x["amp"]), f"{inf['rows_per_s']:.1f}", f"{inf['tokens_per_s']:.0f}",
                     f"{inf['pad_share']:.0%}"])
    n = int(s["settings"]["foldstack"]["infer"]["rows"])
    return table([f"inference ({n} held-out rows)", "rows/s", "tokens/s", "padding"], rows)


def quality_table(s: dict) -> str:
    q, rows = s["quality"], []
    for key in ("foldstack", "trainer"):
        run = q["runs"][key]
        rows.append([LABELS[key].format(amp=run["amp"], malloc=run["malloc"]),
                     run["train"]["samples"] + run["batch_size"],
                     f"{run['train']['samples_per_s']:.1f}", f"{run['wall_secs'] / 60:.1f} min",
                     f"{run['quality']['val_loss']:.3f}", f"{run['quality']['val_acc']:.3f}"])
    header = ["final quality: one pass", "rows", "samples/s", "wall", "val loss",
              f"val acc ({s['args']['quality_eval']} rows)"]
    return (table(header, rows)
            + f"\n  accuracy foldstack - Trainer {q['acc_gap']:+.3f} (allowed >= -{q['tolerance']}): {q['verdict']}")


def hardware_lines(s: dict) -> str:
    h, a = s["hardware"], s["args"]
    return "\n".join([
        f"hardware: GEMM {a['gemm_n']}x{a['gemm_n']}, best of {a['gemm_reps']}, {s['threads']} threads: "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in h["gemm"].items())
        + ("" if "bf16" in h["gemm"] else
           " (bf16 not measured: not native at these torch kernels: the CPU lacks it, or CPU_ISA caps it)"),
        f"  foldstack training ({h['precision']}): {h['train_flops'] / 1e9:.1f} model GFLOP/s = "
        f"{median(h['of_peak']):.1%} of the {h['precision']} peak ({spread(h['of_peak'], '{:.1%}')} over reps)",
        f"  model FLOPs = {h['formula']}; N = {h['size']['non_embedding_params'] / 1e6:.1f}M, "
        f"L = {h['size']['layers']}, d = {h['size']['hidden']}"]
        + (["  WARNING: above 100% of the peak means the GEMM was starved by other load: rerun on a quieter machine"]
           if max(h["of_peak"]) > 1 else []))


def augment_table(aug: dict | None) -> str:
    if aug is None:
        return "preprocessing and augmentation: not measured (--no-augment, or the augment bench failed: see its log)"
    rows = []
    for name in ("demo", "20news"):
        if name not in aug:
            continue
        d = aug[name]
        eda = {r["workers"]: r["docs_per_s"] for r in d["eda"]}
        bt = d.get("backtrans")
        rows.append([f"{name} ({d['docs']} docs, {d['mean_words']:.0f} words)",
                     f"{d['lemmatize']['docs_per_s']:.0f}", f"{eda.get(1, float('nan')):.0f}",
                     " / ".join(f"{eda[w]:.0f}" for w in sorted(eda) if w > 1) or "-",
                     f"{bt['sentences_per_s']:.0f}" if bt else "not installed"])
    return table(["preprocessing, augmentation", "lemmatize docs/s", "EDA docs/s", "EDA, N procs",
                  "apertium sentences/s"], rows)


def target_lines(s: dict) -> str:
    rows = [[t["name"], f">= {t['needed']:.1f}x", f"{t['median']:.2f}x",
             f"{spread(t['reps'], '{:.2f}')} ({t['reps_met']}/{len(t['reps'])} reps)", t["verdict"]]
            for t in s["targets"].values()]
    return table(["targets (median of per-rep ratios)", "needed", "measured", "per repetition", ""], rows)


def report(s: dict) -> str:
    m, a = s["machine"], s["args"]
    loads = [x for k in LABELS for x in s["settings"][k]["load_avg"]]
    head = (f"foldstack bench: MiniLM-L6 + BiLSTM head, {a['train']}, max_len {s['max_len']} ({s['at_cap']:.0%} of "
            f"rows at the cap; the recipe loop pads the same ids to {RECIPE_LEN})\n"
            f"{m.get('cpu', '?')} ({', '.join(m.get('bf16_flags', [])) or 'no bf16 flags'}; torch kernels "
            f"{m.get('torch_cpu_capability', '?')}), {m['cpu_count']} cores, "
            f"{s['threads']} torch threads, torch {m['torch']}, transformers {m['transformers']}; "
            f"median of {a['reps']} interleaved repetitions; load average {min(loads):.1f}-{max(loads):.1f}")
    t = s["runs"]["trainer"][0]["trainer_defaults"]
    note = ("  same rows and initial weights; order: foldstack length-bucketed (seed), Trainer its RandomSampler "
            "(seed), recipe a plain permutation\n  optimizer: foldstack layer-wise lr + head lr, warmup; Trainer "
            f"{'fused ' if t['fused'] else ''}{t['optimizer']} lr {t['lr']}, weight decay {t['weight_decay']}, "
            "no warmup; recipe torch AdamW, one lr, no warmup\n  attention: SDPA in all three (transformers' "
            "default)\n  the recipe saw fewer rows: compare its rates, "
            "not its quality")
    return "\n\n".join([head, training_table(s) + "\n" + note, quality_table(s), inference_table(s),
                        hardware_lines(s), augment_table(s["augment"]), target_lines(s)])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="data/processed/train.parquet", help="a processed train.parquet")
    ap.add_argument("--model", default=str(benchlib.DEFAULT_MODEL), help="the model YAML (encoder, head, batch)")
    ap.add_argument("--max-len", type=int, default=None, help=f"tokens per row (default: the YAML's; <= {RECIPE_LEN})")
    ap.add_argument("--amp", choices=("auto", "bf16", "off"), default=None,
                    help="foldstack's autocast (default: the YAML's); off shows a CPU without native bf16")
    note = lambda key: benchlib.default_note(DEFAULTS, key)  # noqa: E731
    ap.add_argument("--steps", type=int, help=f"timed steps of foldstack and Trainer {note('steps')}")
    ap.add_argument("--recipe-steps", type=int, help=f"timed steps of the recipe loop {note('recipe_steps')}")
    ap.add_argument("--warm", type=int, help=f"untimed warm-up steps before them {note('warm')}")
    ap.add_argument("--reps", type=int, help=f"interleaved repetitions {note('reps')}")
    ap.add_argument("--eval-rows", type=int,
                    help=f"held-out rows: the timed models' quality and inference {note('eval_rows')}")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--quality-rows", type=int, help=f"rows of the one-pass quality check {note('quality_rows')}")
    ap.add_argument("--quality-eval", type=int, help=f"its held-out rows {note('quality_eval')}")
    ap.add_argument("--gemm-n", type=int, help=f"GEMM size {note('gemm_n')}")
    ap.add_argument("--gemm-reps", type=int, help=f"GEMM repetitions {note('gemm_reps')}")
    ap.add_argument("--no-augment", action="store_true", help="skip lemmatization / EDA / back-translation")
    ap.add_argument("--malloc", default=None, help="a malloc library LD_PRELOADed into foldstack's worker, as "
                    "`make folds` does (make bench passes the Makefile's MALLOC, tcmalloc where installed)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny step counts, one repetition")
    ap.add_argument("--out", help="default bench/results/bench.json (--quick: bench-quick.json)")
    args = ap.parse_args(argv)
    benchlib.fill_defaults(args, DEFAULTS, "bench")
    if args.max_len and args.max_len > RECIPE_LEN:
        ap.error(f"--max-len above {RECIPE_LEN} would give the recipe loop (padded to {RECIPE_LEN}) other data")
    if min(args.steps, args.recipe_steps, args.warm, args.reps) < 1:
        ap.error("--steps, --recipe-steps, --warm and --reps must be at least 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    runs = run_reps(args)
    quality = run_quality(args)
    augment = None if args.no_augment else run_augment(args)
    summary = summarise(runs, quality, augment, args)
    summary["wall_secs"] = time.perf_counter() - start
    from foldstack.io import save_json
    save_json(args.out, summary)
    print(report(summary))
    print(f"\nwrote {args.out} ({summary['wall_secs'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
