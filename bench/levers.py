"""What each of foldstack's speed levers contributes: A/B-measured on its own trainer, interleaved, in one run.

Reads  a processed train.parquet and models/minilm_bilstm.yaml, as bench.py (--train, --model, --max-len)
Writes bench/results/levers.json (levers-quick.json with --quick), prints a table
Run    .venv/bin/python bench/levers.py [--only=amp_train,padding] [--steps=20] [--rounds=3] [--threads=N] [--quick]
       (about 15 minutes on 2 idle cores with the defaults, plus torch.compile's compile time)

Levers (the first variant is foldstack's current choice):
  amp_train, amp_infer  bf16 autocast vs fp32 (inference also reports how often the argmax agrees)
  padding               length-bucketed dynamic padding vs random batches padded to their longest row (HF's
                        default) vs random batches padded to max_len
  width_train           training batches exactly as wide as their longest row vs padded to a multiple of 8 (the
                        first is foldstack's choice in fp32 on a CPU, the second in bf16)
  sorted_infer          length-sorted inference batches vs row order
  width_infer           CPU inference batches of at most 2,048 padded tokens, each as wide as its longest row, vs
                        eval_batch_size rows padded to a multiple of 8 (foldstack's plan until 2026-12) and others
  attention             SDPA (`attention: auto`, transformers' default) vs eager (opt-in: faster on CPU, more memory)
  adamw                 fused AdamW (make_optimizer) vs foreach; also the bare optimizer.step() time
  threads               torch threads 2 vs 1
  compile               the encoder as loaded vs torch.compile(encoder) (compile time reported apart)
  compile_infer         prediction with the encoder as loaded vs torch.compile(encoder, dynamic=True) with
                        inductor's `freezing` (weights folded into the graph as constants and pre-packed)
Each lever runs in its own fresh process (thread pools, compiled graphs, allocator state do not leak between
levers). Inside it the variants alternate block by block, A B | B A | A B ..., on the same rows, so drift over
minutes hits both sides alike; a training block is `warm` untimed + `steps` timed steps of trainer.train_epoch
(bench/benchlib.foldstack_train), an inference block one trainer.predict pass over the held-out rows. The
alternatives are swapped in by patching names inside foldstack.trainer in this process only: the library is
not changed. The ratio is foldstack's rate over the alternative's, the median of the per-round paired ratios;
"clear" means every round's ratio is beyond 10% the same way.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import benchlib
from benchlib import median, spread, table

SCRIPT = Path(__file__).resolve()
DEFAULTS = {"steps": (20, 2), "warm": (2, 1), "rounds": (3, 1), "eval_rows": (512, 64)}
CLEAR = 1.10


# --- in the lever's process ------------------------------------------------------------------------------------

class Ctx:
    """The rows, config and timed train / predict calls every lever uses."""

    def __init__(self, spec: dict):
        import torch
        from foldstack import trainer
        self.spec, self.rows = spec, benchlib.load_rows(spec)
        self.cfg = self.rows.cfg
        self.bf16 = torch.bfloat16
        self.dtype = trainer.amp_dtype(self.cfg.amp, torch.device("cpu"))

    def model(self, attn: str | None = None):
        return benchlib.fresh_model(self.cfg, self.rows.n_classes, attn)

    def train(self, model, dtype="amp", optimizer=None) -> dict:
        dtype = self.dtype if dtype == "amp" else dtype
        res = benchlib.foldstack_train(model, self.rows, self.cfg, dtype, self.spec["warm"], self.spec["steps"],
                                       optimizer)
        return {"rate": res["samples_per_s"], "collate_share": res["collate_share"], "pad_share": res["pad_share"]}

    def infer(self, model, dtype="amp") -> dict:
        probs, res = benchlib.foldstack_predict(model, self.rows, self.cfg, self.dtype if dtype == "amp" else dtype)
        return {"rate": res["rows_per_s"], "pad_share": res["pad_share"], "argmax": probs.argmax(1)}


def random_batches(lengths, batch_size: int, rng) -> list[np.ndarray]:
    """Plain shuffled batches, no length bucketing (what a RandomSampler gives)."""
    order = rng.permutation(len(lengths))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def row_order_batches(lengths, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Consecutive rows in file order, batches capped as eval_plan's are (rows, and padded tokens)."""
    batches, start = [], 0
    while start < len(lengths):
        end, longest = start + 1, int(lengths[start])
        while end < len(lengths) and end - start < batch_size:
            if (end - start + 1) * max(longest, int(lengths[end])) > max_tokens:
                break
            longest, end = max(longest, int(lengths[end])), end + 1
        batches.append(np.arange(start, end))
        start = end
    return batches


def with_patches(fn, *patches):
    """fn() with names in foldstack.trainer replaced for its duration."""
    from foldstack import trainer

    def run():
        from contextlib import ExitStack
        with ExitStack() as stack:
            for name, value in patches:
                stack.enter_context(benchlib.patched(trainer, name, value))
            return fn()
    return run


def lever_amp_train(ctx: Ctx) -> dict:
    """bf16 autocast against fp32, each at its own training width (multiples of 8 and exact: train_width_multiple)."""
    model = ctx.model()
    return {"bf16 autocast": lambda: ctx.train(model, ctx.bf16), "fp32": lambda: ctx.train(model, None)}


def lever_amp_infer(ctx: Ctx) -> dict:
    model = ctx.model()
    return {"bf16 autocast": lambda: ctx.infer(model, ctx.bf16), "fp32": lambda: ctx.infer(model, None)}


def lever_padding(ctx: Ctx) -> dict:
    from foldstack.batching import pad_batch
    # every batch max_len wide (takes collate's arguments)
    to_max_len = lambda seqs, pad_id, max_len, *_: pad_batch(seqs, pad_id, max_len)  # noqa: E731
    model = ctx.model()
    train = lambda: ctx.train(model)  # noqa: E731
    return {"length-bucketed, dynamic": train,
            "random batches, dynamic": with_patches(train, ("train_batches", random_batches)),
            "random batches, max_len": with_patches(train, ("train_batches", random_batches),
                                                    ("collate", to_max_len))}


def lever_width_train(ctx: Ctx) -> dict:
    """Training batches exactly as wide as their longest row against widths rounded up to a multiple of 8.
    foldstack's choice (the first variant) depends on the precision: exact in fp32 on a CPU, multiples of 8 in bf16
    (batching.train_width_multiple)."""
    from foldstack.batching import PAD_MULTIPLE, train_width_multiple
    from foldstack.trainer import make_batch
    model = ctx.model()

    def width(multiple: int):
        pad = lambda rows, idx, pad_id, max_len, *_: make_batch(rows, idx, pad_id, max_len, multiple)  # noqa: E731
        return with_patches(lambda: ctx.train(model), ("make_batch", pad))
    variants = {"exact width": width(1), f"multiple of {PAD_MULTIPLE}": width(PAD_MULTIPLE)}
    first = "exact width" if train_width_multiple("cpu", ctx.dtype) == 1 else f"multiple of {PAD_MULTIPLE}"
    return {first: variants.pop(first), **variants}


def lever_sorted_infer(ctx: Ctx) -> dict:
    model = ctx.model()
    infer = lambda: ctx.infer(model)  # noqa: E731
    from foldstack.batching import CPU_EVAL_TOKENS
    row_order = lambda lengths, batch_size, device: (  # noqa: E731
        row_order_batches(lengths, batch_size, CPU_EVAL_TOKENS), 1)
    return {"length-sorted": infer, "row order": with_patches(infer, ("eval_plan", row_order))}


def fixed_plan(max_tokens: int | None, multiple: int):
    """A stand-in for batching.eval_plan: this token budget (None: eval_batch_size rows) and width multiple."""
    from foldstack.batching import eval_batches
    return lambda lengths, batch_size, device: (eval_batches(lengths, batch_size, max_tokens), multiple)


def lever_width_infer(ctx: Ctx) -> dict:
    """foldstack's CPU plan (batching.eval_plan) against its earlier one (eval_batch_size rows, width to a multiple
    of 8) and its neighbours."""
    from foldstack.batching import CPU_EVAL_TOKENS, PAD_MULTIPLE
    model = ctx.model()
    infer = lambda: ctx.infer(model)  # noqa: E731
    rows = ctx.cfg.eval_batch_size
    plans = {f"{rows} rows, multiple of {PAD_MULTIPLE}": (None, PAD_MULTIPLE), f"{rows} rows, exact width": (None, 1),
             **{f"<= {b} tokens, exact width": (b, 1) for b in (CPU_EVAL_TOKENS // 2, CPU_EVAL_TOKENS * 2)}}
    return {f"<= {CPU_EVAL_TOKENS} tokens, exact width": infer,
            **{name: with_patches(infer, ("eval_plan", fixed_plan(*plan))) for name, plan in plans.items()}}


def lever_attention(ctx: Ctx) -> dict:
    auto, eager = ctx.model(), ctx.model("eager")  # auto: transformers' default, SDPA
    return {"sdpa (attention: auto)": lambda: ctx.train(auto), "eager": lambda: ctx.train(eager)}


def optimizer_step_ms(ctx: Ctx, model, optimizer, k: int = 10) -> float:
    """One optimizer.step() alone, in ms: gradients from one backward, then k steps."""
    import torch
    from foldstack import trainer
    bs = ctx.cfg.batch_size
    batch = trainer.collate(ctx.rows.train_ids[:bs], ctx.rows.pad_id, ctx.cfg.max_len)
    trainer.loss_fn(model(**batch), torch.as_tensor(ctx.rows.train_y[:bs]), False).backward()
    start = time.perf_counter()
    for _ in range(k):
        optimizer.step()
    secs = time.perf_counter() - start
    optimizer.zero_grad(set_to_none=True)
    return secs / k * 1000


def lever_adamw(ctx: Ctx) -> dict:
    import torch
    from foldstack import optim, trainer
    model = ctx.model()
    fused = trainer.make_optimizer(model, ctx.cfg)
    c = ctx.cfg
    foreach = torch.optim.AdamW(optim.param_groups(model, c.lr, c.layer_decay, c.head_lr, c.weight_decay), lr=c.lr,
                                foreach=True)

    def block(opt):
        return lambda: {**ctx.train(model, optimizer=opt), "opt_step_ms": optimizer_step_ms(ctx, model, opt)}
    return {"fused": block(fused), "foreach": block(foreach)}


def lever_threads(ctx: Ctx) -> dict:
    import torch
    model = ctx.model()

    def block(n):
        def run():
            torch.set_num_threads(n)
            return ctx.train(model)
        return run
    return {"2 threads": block(2), "1 thread": block(1)}


def lever_compile(ctx: Ctx) -> dict:
    """The compiled variant first runs one untimed block: compiling (and recompiling for new shapes) is reported
    as compile_secs, not mixed into its rate."""
    import torch
    plain, compiled = ctx.model(), ctx.model()
    compiled.encoder = torch.compile(compiled.encoder)
    start = time.perf_counter()
    ctx.train(compiled)
    ctx.compile_secs = time.perf_counter() - start
    return {"as loaded": lambda: ctx.train(plain),
            "torch.compile(encoder)": lambda: {**ctx.train(compiled), "compile_secs": ctx.compile_secs}}


def lever_compile_infer(ctx: Ctx) -> dict:
    """Inference through inductor with freezing on. Frozen weights are constants of the compiled graph: loading
    another fold's weights into the same module would go unseen, so a real use compiles once per fold model.
    The first (compiling) pass is reported as compile_secs, not mixed into the rate."""
    import torch
    import torch._inductor.config
    torch._inductor.config.freezing = True  # this lever's own process only
    plain, compiled = ctx.model(), ctx.model()
    compiled.encoder = torch.compile(compiled.encoder, dynamic=True)
    start = time.perf_counter()
    ctx.infer(compiled)
    ctx.compile_secs = time.perf_counter() - start
    return {"as loaded": lambda: ctx.infer(plain),
            "torch.compile(encoder), freezing": lambda: {**ctx.infer(compiled), "compile_secs": ctx.compile_secs}}


LEVERS = {"amp_train": ("bf16 autocast, training", lever_amp_train),
          "amp_infer": ("bf16 autocast, inference", lever_amp_infer),
          "padding": ("length-bucketed padding, training", lever_padding),
          "width_train": ("training batch width", lever_width_train),
          "sorted_infer": ("length-sorted inference", lever_sorted_infer),
          "width_infer": ("inference batch width", lever_width_infer),
          "attention": ("attention kernel, training", lever_attention),
          "adamw": ("AdamW implementation, training", lever_adamw),
          "threads": ("torch threads, training", lever_threads),
          "compile": ("torch.compile of the encoder, training", lever_compile),
          "compile_infer": ("torch.compile of the encoder, inference", lever_compile_infer)}


def alternate(variants: dict, rounds: int) -> dict[str, list[dict]]:
    """Run the variants' blocks round by round, reversing the order every other round (A B | B A | A B ...)."""
    names, out = list(variants), {n: [] for n in variants}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            out[name].append(variants[name]())
    return out


def worker_lever(spec: dict) -> dict:
    ctx = Ctx(spec)
    blocks = alternate(LEVERS[spec["lever"]][1](ctx), spec["rounds"])
    first = next(iter(blocks))
    agree = {n: float(np.mean(b[-1]["argmax"] == blocks[first][-1]["argmax"]))
             for n, b in blocks.items() if "argmax" in b[-1]}
    blocks = {n: [{k: v for k, v in b.items() if k != "argmax"} for b in bs] for n, bs in blocks.items()}
    return {"blocks": blocks, "argmax_agreement": agree, "tokenize_secs": ctx.rows.tokenize_secs,
            "tokenized_rows": len(ctx.rows.train_ids) + len(ctx.rows.eval_ids)}


# --- orchestration and report ----------------------------------------------------------------------------------

def summarise(name: str, res: dict) -> dict:
    """Per variant: median rate; versus the first: the per-round ratios first/variant and a verdict."""
    blocks = res["blocks"]
    first = next(iter(blocks))
    out = {"variants": {}}
    for variant, bs in blocks.items():
        rates = [b["rate"] for b in bs]
        row = {"rate": median(rates), "rates": rates,
               **{k: median([b[k] for b in bs]) for k in bs[0] if k not in ("rate",)}}
        if variant != first:
            ratios = [a["rate"] / b["rate"] for a, b in zip(blocks[first], bs)]
            row.update(ratio=median(ratios), ratios=ratios, verdict=verdict(ratios))
        if variant in res["argmax_agreement"]:
            row["argmax_agreement"] = res["argmax_agreement"][variant]
        out["variants"][variant] = row
    return out


def verdict(ratios: list[float]) -> str:
    if all(r >= CLEAR for r in ratios):
        return "foldstack's choice, clearly"
    if all(r <= 1 / CLEAR for r in ratios):
        return "ALTERNATIVE FASTER, clearly"
    return "within noise" if all(abs(r - 1) < CLEAR - 1 for r in ratios) else "mixed across rounds"


def lever_rows(key: str, s: dict) -> list[list]:
    title = LEVERS[key][0]
    unit = "rows/s" if key.endswith("infer") else "samples/s"
    rows = []
    for i, (variant, v) in enumerate(s["variants"].items()):
        labels = {"opt_step_ms": "optimizer.step() {:.1f} ms", "compile_secs": "first block, compiling: {:.0f}s",
                  "argmax_agreement": "argmax agrees {:.2%}"}
        extra = [fmt.format(v[k]) for k, fmt in labels.items() if k in v]
        extra += [f"pad {v['pad_share']:.0%}"] if "pad_share" in v else []
        rows.append([title if i == 0 else "", variant, f"{v['rate']:.1f} {unit}",
                     f"x{v['ratio']:.2f}" if "ratio" in v else "(foldstack)",
                     spread(v["ratios"]) if "ratios" in v else "", v.get("verdict", ""), ", ".join(extra)])
    return rows


def context_lines(results: dict) -> list[str]:
    """Two levers foldstack has no switch for, bounded from the measurements: data-loader workers can save at
    most the collate time, re-tokenizing every epoch would add the tokenize time."""
    lines = []
    base = next(iter(results.get("padding", results.get("amp_train", {})).get("variants", {}).values()), None)
    if base and "collate_share" in base:
        lines.append(f"  collating is {base['collate_share']:.2%} of a training step: DataLoader workers could save "
                     "at most that")
    for res in results.values():
        if "tokenize_secs" in res and base:
            per_row = res["tokenize_secs"] / res["tokenized_rows"]
            lines.append(f"  tokenizing takes {per_row * 1e3:.2f} ms per row vs {1e3 / base['rate']:.1f} ms to train "
                         f"on it: tokenizing once per fold saves {per_row * base['rate']:.1%} per extra epoch")
            break
    return lines


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="data/processed/train.parquet", help="a processed train.parquet")
    ap.add_argument("--model", default=str(benchlib.DEFAULT_MODEL), help="the model YAML")
    ap.add_argument("--max-len", type=int, default=None, help="tokens per row (default: the YAML's)")
    ap.add_argument("--only", default=",".join(LEVERS), help=f"comma-separated subset of: {', '.join(LEVERS)}")
    note = lambda key: benchlib.default_note(DEFAULTS, key)  # noqa: E731
    ap.add_argument("--steps", type=int, help=f"timed steps per training block {note('steps')}")
    ap.add_argument("--warm", type=int, help=f"untimed steps before them {note('warm')}")
    ap.add_argument("--rounds", type=int, help=f"rounds of alternation {note('rounds')}")
    ap.add_argument("--eval-rows", type=int, help=f"rows per inference block {note('eval_rows')}")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--amp", choices=("auto", "bf16", "off"), default=None,
                    help="foldstack's autocast (default: the YAML's); off shows a CPU without native bf16")
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny blocks, one round")
    ap.add_argument("--out", help="default bench/results/levers.json (--quick: levers-quick.json)")
    args = ap.parse_args(argv)
    benchlib.fill_defaults(args, DEFAULTS, "levers")
    args.only = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in args.only if k not in LEVERS]
    if unknown:
        ap.error(f"unknown lever {unknown[0]!r} (known: {', '.join(LEVERS)})")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    batch = benchlib.model_config(vars(args)).batch_size
    spec = {**benchlib.base_spec(args), "n_train": (args.warm + args.steps) * batch, "n_eval": args.eval_rows,
            "warm": args.warm, "steps": args.steps, "rounds": args.rounds}
    start, results = time.perf_counter(), {}
    for key in args.only:
        benchlib.progress(f"[{time.perf_counter() - start:5.0f}s] lever {key}")
        res = benchlib.run_isolated(SCRIPT, "lever", {**spec, "lever": key})
        results[key] = {**summarise(key, res), **{k: res[k] for k in ("tokenize_secs", "tokenized_rows", "threads",
                                                                      "load_avg")}}
    summary = {"machine": benchlib.machine(), "args": vars(args), "levers": results,
               "wall_secs": time.perf_counter() - start}
    from foldstack.io import save_json
    save_json(args.out, summary)
    threads = {r["threads"] for r in results.values()}
    loads = [r["load_avg"] for r in results.values()]
    print(f"levers on foldstack's trainer: {args.train}, {args.steps} timed steps per block, {args.rounds} round(s), "
          f"torch threads {sorted(threads)}, load average {min(loads):.1f}-{max(loads):.1f}")
    print(table(["lever", "variant", "rate", "foldstack / it", "per round", "verdict", ""],
                [row for key in results for row in lever_rows(key, results[key])]))
    for line in context_lines(results):
        print(line)
    print(f"\nwrote {args.out} ({summary['wall_secs'] / 60:.1f} min)")


if __name__ == "__main__":
    if not benchlib.worker_main({"lever": worker_lever}, sys.argv[1:]):
        main()
