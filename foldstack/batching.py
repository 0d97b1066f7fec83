"""Tokenize once, truncate (head | tail | head_tail), and batch with little padding.

Training batches are length-bucketed: rows are shuffled, cut into chunks of `BUCKET` batches, sorted by length
inside a chunk, split into batches and the batches shuffled again — near-random batches that pad little.
Inference batches are sorted by length. Padding goes to the batch's longest row rounded up to a multiple of 8
(fewer distinct shapes, which keeps the allocator from fragmenting).
"""
from __future__ import annotations

import numpy as np
import torch

from .text import FIELD_SEP

BUCKET = 50
PAD_MULTIPLE = 8


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


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of row positions sorted longest first (the first batch shows the peak memory at once)."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(seqs: list[np.ndarray], pad_id: int, max_len: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids and attention_mask [B, T], T = longest rounded up to a multiple of 8 (<= max_len)."""
    width = max(len(s) for s in seqs)
    return pad_batch(seqs, pad_id, min(-(-width // PAD_MULTIPLE) * PAD_MULTIPLE, max(max_len, width)))


def pad_batch(seqs: list[np.ndarray], pad_id: int, width: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask [B, width], right-padded (every row at most `width` tokens)."""
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
