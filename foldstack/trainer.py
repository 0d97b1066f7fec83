"""Fine-tune one fresh encoder + head on one fold; predict validation and test with the best epoch's weights.

The loop: length-bucketed dynamic padding, AMP (bf16 autocast on CPU and CUDA, fp16 + GradScaler on CUDA),
gradient accumulation (loss divided by the window's size; gradients unscaled, then clipped, right before the
optimizer step), a linear warmup/decay schedule stepped per optimizer step, evaluation after every epoch, and the
best epoch by the competition metric kept for the predictions.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics
from .batching import PAD_MULTIPLE, collate, eval_plan, train_batches, train_width_multiple
from .errors import kill_point
from .optim import make_optimizer, make_scheduler


@dataclass
class FoldData:
    """Rows and targets. Rows are token ids (lists of arrays) or, for a model with frozen layers, rows of the
    frozen-layer cache (hidden_cache.CachedRows). y is class indices [n] or a 0/1 matrix [n, C], and train_y may
    be class probabilities [n, C] (soft pseudo labels, foldstack.pseudo)."""
    train_ids: list
    train_y: np.ndarray
    val_ids: list
    val_y: np.ndarray
    test_ids: list


def row_lengths(rows) -> np.ndarray:
    """Tokens per row, for either kind of rows."""
    return rows.lengths if hasattr(rows, "lengths") else np.array([len(s) for s in rows])


def make_batch(rows, idx: np.ndarray, pad_id: int, max_len: int, multiple: int = PAD_MULTIPLE) -> dict:
    """The model's inputs for rows[idx]: padded token ids, or (cached rows) padded frozen-layer outputs; the
    width a multiple of `multiple`."""
    if hasattr(rows, "batch"):
        return rows.batch(idx, multiple)
    return collate([rows[i] for i in idx], pad_id, max_len, multiple)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `setting` on `device`, or None for fp32."""
    if setting == "off":
        return None
    if setting == "fp16":
        if device.type != "cuda":
            raise ValueError("amp: fp16 needs a CUDA GPU; use bf16 or auto on a CPU")
        return torch.float16
    if setting == "bf16":
        return torch.bfloat16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (or the text given); None where there is no such file."""
    if cpuinfo is None and Path("/proc/cpuinfo").exists():
        cpuinfo = Path("/proc/cpuinfo").read_text()
    if not cpuinfo or "flags" not in cpuinfo:
        return None
    return set(next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "").split())


def cpu_has_bf16(cpuinfo: str | None = None, capability: str | None = None) -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (training measured ~1.4x faster than fp32 with AVX512-BF16
    alone, ~2x with AMX).

    oneDNN's own check (torch.ops.mkldnn._is_mkldnn_bf16_supported) also says yes on AVX-512 CPUs without BF16,
    where bf16 is emulated: a 1024² GEMM ran at 55 GFLOP/s against fp32's 228 on such a Xeon, so autocast would
    halve training speed. On x86 Linux the CPU's flags decide, provided torch dispatches AVX-512 kernels at all
    (`capability`, default torch.backends.cpu.get_cpu_capability(): `ATEN_CPU_CAPABILITY=avx2`, as `make
    CPU_ISA=avx2` sets, runs a bf16 CPU as an AVX2-only one); elsewhere oneDNN's check (guarded: private API)."""
    flags = cpu_flags(cpuinfo)
    if flags is not None:
        capability = capability or torch.backends.cpu.get_cpu_capability()
        return capability.startswith("AVX512") and any(f in flags for f in NATIVE_BF16_FLAGS)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cuda":  # pinned host memory lets the copy overlap with compute
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return batch


def loss_fn(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Cross-entropy on class indices [B] or class probabilities [B, C] (one-hot rows + soft pseudo labels);
    BCE-with-logits on 0/1 or probability targets [B, C] for multi-label. Both in fp32."""
    logits = logits.float()
    if multilabel:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
    return torch.nn.functional.cross_entropy(logits, y)


# Eager attention's probabilities [B, H, T, T] at batch 64, 12 heads, 128 tokens: 50 MB, transient at inference.
EAGER_MAX_LEN = 128


@contextlib.contextmanager
def inference_attention(model, cfg, device):
    """Eager attention while predicting on a CPU (`attention: auto`, max_len <= EAGER_MAX_LEN), then the model's own.

    In training eager keeps every layer's attention probabilities for backward, which is why `auto` trains with SDPA
    (docs/performance.md); at inference nothing is kept, and eager predicted MiniLM 1.12x faster than SDPA at
    64 tokens (1 thread, no bf16; probabilities equal to 1e-4)."""
    from transformers import PreTrainedModel
    # set_attn_implementation is public from transformers 4.54; older versions predict with the loaded kernel
    encoders = [m for m in model.modules() if isinstance(m, PreTrainedModel) and hasattr(m, "set_attn_implementation")]
    if device.type != "cpu" or cfg.attention != "auto" or cfg.max_len > EAGER_MAX_LEN or not encoders:
        yield
        return
    # transformers keeps the chosen kernel in a private config field; tests/test_model_and_training.py guards it
    before = [m.config._attn_implementation for m in encoders]
    for m in encoders:
        m.set_attn_implementation("eager")
    try:
        yield
    finally:
        for m, kernel in zip(encoders, before):
            m.set_attn_implementation(kernel)


@torch.inference_mode()
def predict(model, seqs: list, cfg, pad_id: int, device, dtype, multilabel: bool) -> np.ndarray:
    """Probabilities [n, C] in the row order of `seqs`; batches sorted by length, results scattered back."""
    model.eval()
    with inference_attention(model, cfg, device):
        return _predict(model, seqs, cfg, pad_id, device, dtype, multilabel)


def _predict(model, seqs: list, cfg, pad_id: int, device, dtype, multilabel: bool) -> np.ndarray:
    out = None
    batches, multiple = eval_plan(row_lengths(seqs), cfg.eval_batch_size, device.type)
    for idx in batches:
        batch = to_device(make_batch(seqs, idx, pad_id, cfg.max_len, multiple), device)
        with autocast(device, dtype):
            logits = model(**batch).float()
        probs = (torch.sigmoid(logits) if multilabel else torch.softmax(logits, -1)).cpu().numpy()
        if out is None:
            out = np.zeros((len(seqs), probs.shape[1]), dtype=np.float32)
        out[idx] = probs
    return out


def init_label_priors(model, train_y: np.ndarray) -> None:
    """Multi-label: start each label's output bias at the logit of its training frequency.

    With zero biases every one of C sigmoids starts at 0.5, and with rare labels the first epoch is spent pushing
    negatives down; starting at the base rate lets training go straight to telling documents apart.
    """
    prior = np.clip(train_y.mean(0), 1e-4, 1 - 1e-4)
    with torch.no_grad():
        model.out.bias.copy_(torch.as_tensor(np.log(prior / (1 - prior)), dtype=model.out.bias.dtype))


def optimizer_step(model, optimizer, scheduler, scaler, max_grad_norm: float) -> None:
    """Unscale (fp16), clip, step, schedule, clear — in that order, once per accumulation window."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def train_epoch(model, data: FoldData, cfg, state: dict, rng, bar) -> float:
    """One pass over the training rows; returns the mean loss per micro-batch."""
    model.train()
    batches = train_batches(row_lengths(data.train_ids), cfg.batch_size, rng)
    device, dtype, multilabel = state["device"], state["dtype"], state["multilabel"]
    multiple = train_width_multiple(device.type, dtype)
    total = torch.zeros((), device=device)  # summed on the device: .item() every step would sync a GPU
    for b, idx in enumerate(batches):
        window_start = b - b % cfg.grad_accum
        window = min(cfg.grad_accum, len(batches) - window_start)  # the last window may be shorter
        batch = to_device(make_batch(data.train_ids, idx, state["pad_id"], cfg.max_len, multiple), device)
        y = torch.as_tensor(data.train_y[idx]).to(device)
        with autocast(device, dtype):
            logits = model(**batch)
        loss = loss_fn(logits, y, multilabel)
        scaled = loss / window
        (state["scaler"].scale(scaled) if state["scaler"] else scaled).backward()
        if b - window_start == window - 1:
            optimizer_step(model, state["optimizer"], state["scheduler"], state["scaler"], cfg.max_grad_norm)
            kill_point("train-step")
        total += loss.detach()
        bar.update(1)
        if b % 20 == 0:
            bar.set_postfix(loss=f"{total.item() / (b + 1):.4f}", refresh=False)
    return total.item() / max(1, len(batches))


def fit(model, data: FoldData, cfg, metric: str, multilabel: bool, pad_id: int, log_path, seed: int) -> dict:
    """Train for cfg.epochs, keep the best epoch by `metric`; return its val and test probabilities + history."""
    device = next(model.parameters()).device
    dtype = amp_dtype(cfg.amp, device)
    optimizer = make_optimizer(model, cfg)
    n_batches = math.ceil(len(data.train_ids) / cfg.batch_size)
    total_steps = cfg.epochs * math.ceil(n_batches / cfg.grad_accum)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    state = {"device": device, "dtype": dtype, "multilabel": multilabel, "pad_id": pad_id, "scaler": scaler,
             "optimizer": optimizer, "scheduler": make_scheduler(optimizer, total_steps, cfg.warmup)}
    rng = np.random.default_rng(seed)
    best, history = None, []
    # On a terminal the bar refreshes live; in a log file (nohup, CI) one line every 30 s.
    refresh = 0.1 if sys.stderr.isatty() else 30
    with open(log_path, "w") as log, tqdm(total=cfg.epochs * n_batches, desc="train", mininterval=refresh) as bar:
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            train_loss = train_epoch(model, data, cfg, state, rng, bar)
            t1 = time.perf_counter()
            val = predict(model, data.val_ids, cfg, pad_id, device, dtype, multilabel)
            score = metrics.score(metric, data.val_y, val, multilabel)
            row = {"epoch": epoch + 1, "train_loss": train_loss, metric: score, "train_secs": t1 - t0,
                   "train_samples_per_s": len(data.train_ids) / (t1 - t0),
                   "train_tokens_per_s": int(row_lengths(data.train_ids).sum()) / (t1 - t0),
                   "eval_secs": time.perf_counter() - t1}
            history.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            tqdm.write(f"  epoch {epoch + 1}: loss {train_loss:.4f}  val {metric} {score:.4f}  "
                       f"({row['train_samples_per_s']:.1f} samples/s)")
            if best is None or metrics.better(metric, score, best["score"]):
                weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                best = {"score": score, "epoch": epoch + 1, "val": val, "weights": weights}
    model.load_state_dict(best["weights"])  # predict the test set with the chosen epoch, not the last one
    t0 = time.perf_counter()
    test = predict(model, data.test_ids, cfg, pad_id, device, dtype, multilabel)
    return {"val": best["val"], "test": test, "score": best["score"], "best_epoch": best["epoch"],
            "weights": best["weights"], "history": history, "amp": str(dtype).replace("torch.", "") if dtype else
            "fp32", "test_secs": time.perf_counter() - t0}
