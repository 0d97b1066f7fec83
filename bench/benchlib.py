"""Helpers shared by the bench scripts (bench.py, levers.py, augment_speed.py); not a script itself.

Data (a fixed shuffle of a processed train.parquet, tokenized once as foldstack does), a per-step clock and a
collate recorder (so every setting's rates count the same steps and the same tokens), fresh worker processes (so
each setting's peak RSS is its own), foldstack's train/predict timed, model-FLOP counts and a plain-text table.
Heavy imports (torch, transformers, foldstack) happen inside functions: the orchestrating process stays light.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from any directory, with or without the editable install
    sys.path.insert(0, str(ROOT))
DEFAULT_MODEL = ROOT / "models" / "minilm_bilstm.yaml"
RECIPE_LEN, RECIPE_BATCH = 300, 10  # the public recipe: every text padded to 300 tokens, batch 10
RESULTS = Path("bench/results")


# --- machine and process ---------------------------------------------------------------------------------------

def cpu_secs() -> float:
    """CPU seconds used so far by this process and its finished children (pool workers, apertium's pipeline)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def base_spec(args) -> dict:
    """What every worker of bench.py and levers.py reads: the rows, the model YAML, its max_len and amp, threads."""
    return {"train": args.train, "model": args.model, "max_len": args.max_len, "threads": args.threads,
            "amp": getattr(args, "amp", None)}


def default_note(defaults: dict, key: str) -> str:
    """'(default X; --quick Y)' for a knob's --help, from the same table fill_defaults uses."""
    full, quick = defaults[key]
    return f"(default {full}; --quick {quick})"


def timed(fn, *args) -> tuple:
    """fn(*args) -> (its result, wall seconds, CPU seconds of this process and its children, load before)."""
    load, start, cpu = os.getloadavg()[0], time.perf_counter(), cpu_secs()
    result = fn(*args)
    return result, time.perf_counter() - start, cpu_secs() - cpu, load


def fill_defaults(args, defaults: dict, stem: str) -> None:
    """Unset knobs take their default, full or --quick ({knob: (full, quick)}); --out defaults to
    bench/results/<stem>.json (<stem>-quick.json with --quick)."""
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.out = args.out or str(RESULTS / f"{stem}{'-quick' if args.quick else ''}.json")


def peak_rss_gb() -> float:
    """This process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def machine() -> dict:
    """What the numbers were measured on: CPU model, bf16 flags and torch's kernel level, cores, load, versions."""
    info = {"cpu_count": os.cpu_count(), "load_avg": os.getloadavg()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                           if line.startswith("model name"))
        from foldstack.trainer import cpu_flags
        flags = cpu_flags(cpuinfo) or set()
        info["bf16_flags"] = sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile"))
    except (OSError, StopIteration):
        pass
    import importlib.metadata as md
    info.update({p: md.version(p) for p in ("torch", "transformers")})
    import torch  # the kernels torch dispatches: AVX2 on the slow kind, or where `make CPU_ISA=avx2` caps them
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def progress(msg: str) -> None:
    """Progress goes to stderr: stdout holds only the final table."""
    print(msg, file=sys.stderr, flush=True)


def run_isolated(script: Path, worker: str, spec: dict, preload: str | None = None) -> dict:
    """`script --worker=NAME` in a fresh interpreter, so its peak RSS and thread pools are its own; its result.
    preload: a malloc library to LD_PRELOAD (the Makefile's MALLOC), as `make folds` runs training."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(script), f"--worker={worker}", f"--spec={json.dumps(spec)}", f"--result={out}"]
        env = {**os.environ, "LD_PRELOAD": preload} if preload else None
        load, start = os.getloadavg()[0], time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if proc.returncode:
            sys.exit(f"error: bench worker {worker} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        result = json.loads(out.read_text())
    malloc = Path(preload).name.split(".so")[0].removeprefix("lib") if preload else "glibc"
    return {**result, "load_avg": load, "wall_secs": time.perf_counter() - start, "malloc": malloc}


def worker_main(workers: dict, argv: list[str]) -> bool:
    """In a worker process (argv has --worker): set the threads, run the worker, write its result; else False."""
    import argparse
    ap = argparse.ArgumentParser(add_help=False)  # --help belongs to the script's own parser
    ap.add_argument("--worker")
    ap.add_argument("--spec")
    ap.add_argument("--result")
    args, _ = ap.parse_known_args(argv)
    if not args.worker:
        return False
    import torch
    spec = json.loads(args.spec)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    threads = torch.get_num_threads()  # before the worker runs: a lever may change it
    result = {**workers[args.worker](spec), "threads": threads}
    Path(args.result).write_text(json.dumps(result, default=float))
    return True


# --- data ------------------------------------------------------------------------------------------------------

def load_texts(path: Path) -> tuple[list[str], list[str]]:
    """(ids, texts) of a processed train.parquet, or of a raw 20news folder (subject + body joined as prep does)."""
    from foldstack import text
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        return df["id"].astype(str).tolist(), df["text"].tolist()
    df = pd.read_csv(path / "train.csv", dtype=str, keep_default_na=False)
    return df["id"].tolist(), text.join_text(df, ("subject", "body"))


@dataclass
class Rows:
    """Tokenized rows shared by every setting: the training rows first, then disjoint held-out rows."""
    cfg: object
    train_ids: list
    train_y: np.ndarray
    eval_ids: list
    eval_y: np.ndarray
    n_classes: int
    pad_id: int
    at_cap: float          # share of rows cut at (or exactly at) max_len
    tokenize_secs: float


def model_config(spec: dict):
    """The model YAML (the demo's minilm_bilstm by default), with --max-len and --amp applied, checked like train's.

    freeze_layers is set to 0: the bench compares training loops on the same full model (HF Trainer has no
    frozen-layer cache); bench/freeze_speed.py measures what the cache saves."""
    from foldstack import config
    overrides = {"freeze_layers": 0}
    if spec.get("max_len"):
        overrides["max_len"] = spec["max_len"]
    if spec.get("amp"):
        overrides["amp"] = spec["amp"]
    return config.load(config.Model, spec.get("model") or DEFAULT_MODEL, overrides)


def load_rows(spec: dict) -> Rows:
    """The first n_train + n_eval rows of a fixed shuffle (seed 0) of spec['train'], tokenized once (foldstack's
    encode: same truncation for every setting, so all of them train on identical token ids)."""
    from foldstack.batching import encode
    from foldstack.encoder import load_tokenizer
    from foldstack.text import text_column
    cfg, path = model_config(spec), Path(spec["train"])
    df = pd.read_parquet(path)
    if "label" not in df or df["label"].dtype.kind not in "iu":
        sys.exit(f"error: {path}: the bench needs single-label data (an integer 'label' column)")
    need = spec["n_train"] + spec["n_eval"]
    if need > len(df):
        sys.exit(f"error: {path} has {len(df)} rows; this bench needs {need} (fewer --steps or --eval-rows)")
    pick = df.iloc[np.random.default_rng(0).permutation(len(df))[:need]]
    tokenizer = load_tokenizer(cfg.backbone)
    start = time.perf_counter()
    ids = encode(tokenizer, pick[text_column(cfg)].tolist(), cfg.max_len, cfg.truncation)
    secs = time.perf_counter() - start
    classes = path.parent / "classes.json"
    n_classes = len(json.loads(classes.read_text())["classes"]) if classes.exists() else int(df["label"].max()) + 1
    y, n = pick["label"].to_numpy(), spec["n_train"]
    return Rows(cfg, ids[:n], y[:n], ids[n:], y[n:], n_classes, tokenizer.pad_token_id,
                float(np.mean([len(s) >= cfg.max_len for s in ids])), secs)


def fresh_model(cfg, n_classes: int, attn: str | None = None):
    """foldstack's encoder + head with the head seeded as train.py seeds it; `attn` overrides cfg.attention."""
    import dataclasses
    import torch
    from foldstack.encoder import build_model
    torch.manual_seed(cfg.seed)
    return build_model(dataclasses.replace(cfg, attention=attn) if attn else cfg, n_classes)


# --- timing ----------------------------------------------------------------------------------------------------

class Clock:
    """Stands in for train_epoch's tqdm bar (or a Trainer callback): a timestamp at the end of every step."""

    def __init__(self):
        self.stamps: list[float] = []

    def update(self, n: int = 1) -> None:
        self.stamps.append(time.perf_counter())

    def set_postfix(self, **kw) -> None:
        pass


def batch_stats(lengths, width: int) -> dict:
    """rows, real tokens, computed (padded) tokens and the sum of squared lengths (attention FLOPs) of a batch."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return {"rows": len(lengths), "real": int(lengths.sum()), "padded": len(lengths) * int(width),
            "sq": int((lengths ** 2).sum())}


class Recorder:
    """Wraps a collate function and keeps each batch's stats and the time spent collating."""

    def __init__(self, collate):
        self.collate, self.batches, self.secs = collate, [], 0.0

    def __call__(self, seqs, *args):
        start = time.perf_counter()
        batch = self.collate(seqs, *args)
        self.secs += time.perf_counter() - start
        self.batches.append(batch_stats([len(s) for s in seqs], batch["input_ids"].shape[1]))
        return batch


@contextmanager
def patched(module, name: str, value):
    """module.name = value inside the block (instrumentation and lever variants; foldstack's code is unchanged)."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield value
    finally:
        setattr(module, name, old)


def totals(batches: list[dict]) -> dict:
    return {k: sum(b[k] for b in batches) for k in ("rows", "real", "padded", "sq")}


def window_rates(stamps: list[float], batches: list[dict], warm: int) -> dict:
    """Rates over the steps after the first `warm`: from the end of step `warm` to the end of the last step."""
    secs = stamps[-1] - stamps[warm - 1]
    t = totals(batches[warm:len(stamps)])
    return {"steps": len(stamps) - warm, "secs": secs, "samples": t["rows"], "samples_per_s": t["rows"] / secs,
            "tokens_per_s": t["real"] / secs, "padded_tokens_per_s": t["padded"] / secs,
            "pad_share": 1 - t["real"] / t["padded"], "sq_per_s": t["sq"] / secs}


def infer_rates(batches: list[dict], secs: float) -> dict:
    t = totals(batches)
    return {"rows": t["rows"], "secs": secs, "rows_per_s": t["rows"] / secs, "tokens_per_s": t["real"] / secs,
            "pad_share": 1 - t["real"] / t["padded"]}


def foldstack_train(model, rows: Rows, cfg, dtype, warm: int, steps: int, optimizer=None) -> dict:
    """foldstack's own train_epoch over exactly warm + steps batches of the first rows; rates after the warm-up.

    The optimizer, schedule and batch order are fit()'s (make_optimizer, warmup then linear decay over these
    steps, train_batches seeded with cfg.seed); `optimizer` replaces the optimizer (a lever).
    """
    import torch
    from foldstack import trainer
    n = (warm + steps) * cfg.batch_size
    if len(rows.train_ids) < n:
        raise ValueError(f"{warm + steps} steps of {cfg.batch_size} need {n} training rows, have {len(rows.train_ids)}")
    data = trainer.FoldData(rows.train_ids[:n], rows.train_y[:n], [], rows.train_y[:0], [])
    optimizer = optimizer or trainer.make_optimizer(model, cfg)
    state = {"device": torch.device("cpu"), "dtype": dtype, "multilabel": False, "pad_id": rows.pad_id,
             "scaler": None, "optimizer": optimizer,
             "scheduler": trainer.make_scheduler(optimizer, warm + steps, cfg.warmup)}
    clock, rec = Clock(), Recorder(trainer.collate)
    with patched(trainer, "collate", rec):
        loss = trainer.train_epoch(model, data, cfg, state, np.random.default_rng(cfg.seed), clock)
    step_secs = clock.stamps[-1] - clock.stamps[0]
    return {**window_rates(clock.stamps, rec.batches, warm), "train_loss": loss,
            "collate_share": rec.secs / max(step_secs, 1e-9)}


def foldstack_predict(model, rows: Rows, cfg, dtype, n_warm: int = 64) -> tuple[np.ndarray, dict]:
    """trainer.predict on the held-out rows (after a warm-up on the first n_warm): probabilities and rates."""
    import torch
    from foldstack import trainer
    cpu = torch.device("cpu")
    trainer.predict(model, rows.eval_ids[:n_warm], cfg, rows.pad_id, cpu, dtype, False)
    rec = Recorder(trainer.collate)
    with patched(trainer, "collate", rec):
        start = time.perf_counter()
        probs = trainer.predict(model, rows.eval_ids, cfg, rows.pad_id, cpu, dtype, False)
        secs = time.perf_counter() - start
    return probs, infer_rates(rec.batches, secs)


def quality(y: np.ndarray, probs: np.ndarray) -> dict:
    """Held-out log-loss and accuracy from probabilities [n, C] (foldstack's metrics)."""
    from foldstack.metrics import score
    return {"val_loss": score("log_loss", y, probs, False), "val_acc": score("accuracy", y, probs, False)}


# --- FLOPs -----------------------------------------------------------------------------------------------------

def model_size(model) -> dict:
    """Parameters that do matmul work per token (everything but the embedding tables), layers, width."""
    embed = {id(p) for p in model.encoder.embeddings.parameters()}
    c = model.encoder.config
    return {"params": sum(p.numel() for p in model.parameters()),
            "non_embedding_params": sum(p.numel() for p in model.parameters() if id(p) not in embed),
            "layers": c.num_hidden_layers, "hidden": c.hidden_size}


def train_flops_per_s(size: dict, rates: dict) -> float:
    """Model FLOP/s of training: 6 N T (forward 2 N per token, backward 4 N) over real tokens T, plus attention's
    12 L d sum(len^2) (QK^T and AV: 4 L d len^2 forward per row, x3 with backward). Padding is not counted."""
    return 6 * size["non_embedding_params"] * rates["tokens_per_s"] + 12 * size["layers"] * size["hidden"] * \
        rates["sq_per_s"]


# --- summaries -------------------------------------------------------------------------------------------------

def median(values) -> float:
    return float(statistics.median(values))


def spread(values, fmt: str = "{:.2f}") -> str:
    """'lo–hi' over repetitions, or the one value."""
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def table(header: list[str], rows: list[list], indent: str = "  ") -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    return "\n".join(lines)
