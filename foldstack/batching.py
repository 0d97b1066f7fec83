"""Tokenize once, truncate (head | tail | head_tail), and batch with little padding.

Training batches are length-bucketed: rows are shuffled, cut into chunks of `BUCKET` batches, sorted by length
inside a chunk, split into batches and the batches shuffled again — near-random batches that pad little. A CPU
training in fp32 pads each batch exactly to its longest row; bf16 and CUDA round the width up to a multiple of 8
(`train_width_multiple`; masked-LM pretraining pads to multiples of 8 everywhere). Inference batches are sorted by
length (`eval_plan`); on a CPU they are also small and exact.
"""
from __future__ import annotations

import numpy as np
import torch

from .text import FIELD_SEP

BUCKET = 50
PAD_MULTIPLE = 8
# CPU inference: at most this many padded tokens per batch. bench/levers.py's width_infer measured it against
# eval_batch_size (64) rows padded to a multiple of 8: 1.15x (demo, 64 tokens) and 1.18x (20news, 256 tokens) the
# rows/s in fp32, 1.05-1.10x in bf16, with 1,024 and 4,096 slower; smaller batches keep the activations in cache.
CPU_EVAL_TOKENS = 2048


def train_width_multiple(device_type: str, dtype: torch.dtype | None) -> int:
    """What a training batch's width rounds up to: exactly its longest row when a CPU trains in fp32 (dtype None),
    a multiple of 8 otherwise.

    In fp32 on a CPU the rounding is waste on short texts: bench/levers.py's width_train measured exact widths
    1.12-1.14x the training rows/s (demo, 64 tokens, two processes at 1 thread each; padding 11% -> 3%), and
    `make bench` in fp32 kept its peak RSS under HF Trainer's (1.03x). In bf16 the same change raised the bench's
    peak RSS from 1.25 to 1.49 GB, past Trainer's 1.35 (likely, not verified: oneDNN builds its bf16 kernels per
    shape, and exact widths make up to 8x the shapes), so bf16 keeps multiples of 8; CUDA's tensor cores want them.
    """
    return 1 if device_type == "cpu" and dtype is None else PAD_MULTIPLE


def truncate(ids: list[int], budget: int, mode: str) -> list[int]:
    """Keep `budget` tokens: the first, the last, or a quarter from the head and the rest from the tail."""
    if len(ids) <= budget:
        return ids
    if mode == "head":
        return ids[:budget]
    if mode == "tail":
        return ids[-budget:]
    head = budget // 4  # Sun et al.: 128 head + 382 tail of 510
    return ids[:head] + ids[len(ids) - (budget - head):]


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after one text ([CLS] / [SEP] for BERT, <s> / </s> for RoBERTa)."""
    body = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next(i for i in range(len(full)) if full[i:i + len(body)] == body)
    return full[:start], full[start + len(body):]


def encode(tokenizer, texts: list[str], max_len: int, mode: str) -> list[np.ndarray]:
    """Texts -> token id arrays with special tokens, at most max_len long. Fields are split by the sep token."""
    texts = [t.replace(FIELD_SEP, f" {tokenizer.sep_token} ") for t in texts]
    prefix, suffix = special_frame(tokenizer)
    budget = max_len - len(prefix) - len(suffix)
    # Truncation happens here, not in the tokenizer, so that head_tail can keep both ends.
    raw = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return [np.asarray(prefix + truncate(ids, budget, mode) + suffix, dtype=np.int64) for ids in raw]


def train_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled, length-bucketed batches of row positions covering every row once."""
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch_size * BUCKET):
        chunk = order[start:start + batch_size * BUCKET]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Batches of row positions sorted longest first (the first batch shows the peak memory at once), each of at
    most batch_size rows and, given max_tokens, at most that many padded tokens (rows x its longest row; a longer
    row is a batch of its own)."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(1, int(lengths[order[start]]))
        n = batch_size if max_tokens is None else max(1, min(batch_size, max_tokens // longest))
        batches.append(order[start:start + n])
        start += n
    return batches


def eval_plan(lengths: np.ndarray, batch_size: int, device_type: str) -> tuple[list[np.ndarray], int]:
    """Inference batches for rows of these lengths on this device, and the multiple their width pads to.

    On a CPU: at most CPU_EVAL_TOKENS padded tokens per batch, each padded to its exact longest row. Elsewhere
    (CUDA): batch_size rows, padded to a multiple of 8, the widths tensor cores are built for."""
    if device_type == "cpu":
        return eval_batches(lengths, batch_size, CPU_EVAL_TOKENS), 1
    return eval_batches(lengths, batch_size), PAD_MULTIPLE


def inference_batches(seqs: list[np.ndarray], pad_id: int, max_len: int, batch_size: int, device: torch.device):
    """Yields (row positions, padded input_ids + attention_mask on `device`) for predicting token-id rows, in
    eval_plan's batches: the loop of every inference pass over token ids (not over frozen-cache rows)."""
    batches, multiple = eval_plan(np.array([len(s) for s in seqs]), batch_size, device.type)
    for idx in batches:
        yield idx, {k: v.to(device) for k, v in collate([seqs[i] for i in idx], pad_id, max_len, multiple).items()}


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_width(longest: int, max_len: int, multiple: int = PAD_MULTIPLE) -> int:
    """`longest` rounded up to `multiple`, but never past max_len (unless a row is longer)."""
    return min(round_up(longest, multiple), max(max_len, longest))


def collate(seqs: list[np.ndarray], pad_id: int, max_len: int, multiple: int = PAD_MULTIPLE) -> dict[str, torch.Tensor]:
    """Right-padded input_ids and attention_mask [B, T], T = longest rounded up to `multiple` (<= max_len)."""
    return pad_batch(seqs, pad_id, padded_width(max(len(s) for s in seqs), max_len, multiple))


def pad_batch(seqs: list[np.ndarray], pad_id: int, width: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask [B, width], right-padded (every row at most `width` tokens)."""
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
