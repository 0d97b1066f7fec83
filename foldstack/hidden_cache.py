"""The frozen-layer cache: the frozen lower layers' output for every text, computed once, read by every fold and epoch.
(And embed_lr's table of pooled sentence embeddings, the same idea at one vector per text: `open_pooled`.)

With `freeze_layers: N` in a model YAML, the embeddings and the lowest N encoder layers never train, so their output
for a text is the same in every fold and every epoch. The cache stage (`make folds` runs it before the model's
folds) computes it once for every text the model can meet (train, test, augmented rows; pseudo rows are test
texts) in one length-sorted pass, stores it here, and each fold trains only the layers above N + the head on it
(foldstack.encoder.Classifier's `hidden` input).

Layout   <root>/<key>/hidden.npy   float16 [total_tokens, H], the texts' real tokens one after another
                      offsets.npy  int64 [n_texts + 1]: text i is hidden[offsets[i]:offsets[i + 1]]
                      meta.json    the key's inputs, size, build time and threads
The key hashes everything the numbers depend on: the backbone's files (content, so a re-pretrained backbone
directory is a new key), max_len, truncation, the text variant, N, the attention kernel, the foldstack and
transformers versions (tokenization and kernels) and the texts themselves in order. A changed key is a new directory; an old one is never read again. The directory is written under a
temporary name and renamed when complete, under a lock so that parallel runs build it once (a fold run alone
builds it itself).
hidden.npy is read memory-mapped: five folds in a row share the page cache instead of each holding a copy.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .batching import PAD_MULTIPLE, inference_batches, round_up
from .text import text_column

FP16_MAX = float(np.finfo(np.float16).max)


def backbone_digest(path: str) -> str:
    """sha256 over a backbone directory's config, tokenizer and weight files (names and bytes); a Hub id (no local
    directory) is keyed by its name: a model re-published under the same id is not noticed."""
    h = hashlib.sha256()
    if not Path(path).is_dir():
        return "hub:" + path
    for f in sorted(Path(path).iterdir()):
        if f.is_file() and f.suffix in (".json", ".txt", ".model", ".safetensors", ".bin"):
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()


def digest(settings: dict, texts: list[str]) -> str:
    """sha256 of the settings (as sorted JSON) and the texts in order."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for t in texts:
        h.update(t.encode() + b"\0")
    return h.hexdigest()


@contextlib.contextmanager
def build_lock(path: Path):
    """One builder per cache path at a time (other paths build meanwhile); a waiter then finds it built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cache_key(cfg, backbone_path: str, texts: list[str]) -> str:
    """The cache directory's name: a hash of every input its numbers depend on."""
    import transformers
    from . import __version__
    settings = {"backbone": backbone_digest(backbone_path), "max_len": cfg.max_len, "truncation": cfg.truncation,
                "text": cfg.text, "freeze_layers": cfg.freeze_layers, "attention": cfg.attention, "dtype": "fp16",
                "n_texts": len(texts), "foldstack": __version__, "transformers": transformers.__version__}
    return f"{cfg.freeze_layers}L-{cfg.max_len}-{digest(settings, texts)[:16]}"


def compute(model, seqs: list[np.ndarray], pad_id: int, max_len: int, batch_size: int, hidden_file: Path) -> np.ndarray:
    """Run the model's frozen lower part over `seqs` (longest first) into hidden_file; returns the offsets.

    Always in fp32: one pass, so its cost is small beside training, and the cache does not depend on the
    machine's autocast choice (float16 storage then rounds it once)."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    width = model.lower.config.hidden_size
    out = np.lib.format.open_memmap(hidden_file, mode="w+", dtype=np.float16, shape=(int(offsets[-1]), width))
    for idx, batch in inference_batches(seqs, pad_id, max_len, batch_size, next(model.parameters()).device):
        h = model.lower_hidden(**batch).float().cpu().numpy()
        if np.abs(h).max() > FP16_MAX:
            raise ValueError("a frozen layer's output exceeds float16's range; use freeze_layers: 0")
        for j, i in enumerate(idx):
            out[offsets[i]:offsets[i + 1]] = h[j, :lengths[i]]
    out.flush()
    return offsets


def build(model, seqs: list[np.ndarray], pad_id: int, cfg, path: Path, meta: dict) -> None:
    """Write the cache directory `path` (under a temporary name, renamed when complete)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    offsets = compute(model, seqs, pad_id, cfg.max_len, cfg.eval_batch_size, tmp / "hidden.npy")
    np.save(tmp / "offsets.npy", offsets)
    size = (tmp / "hidden.npy").stat().st_size
    meta = {**meta, "n_texts": len(seqs), "n_tokens": int(offsets[-1]), "bytes": size,
            "build_secs": time.perf_counter() - t0, "threads": torch.get_num_threads()}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    os.rename(tmp, path)
    print(f"  frozen-layer cache {path.name}: {len(seqs)} texts, {offsets[-1]} tokens, {size / 2**20:.0f} MiB "
          f"in {meta['build_secs']:.0f}s on {meta['threads']} thread(s)")


class HiddenCache:
    """An open cache: rows are looked up by text (the same text always has the same hidden states)."""

    def __init__(self, path: Path, texts: list[str]):
        self.path = Path(path)
        self.hidden = np.load(self.path / "hidden.npy", mmap_mode="r")
        self.offsets = np.load(self.path / "offsets.npy")
        self.lengths = np.diff(self.offsets)
        if len(self.lengths) != len(texts):
            raise ValueError(f"{self.path}: holds {len(self.lengths)} texts, expected {len(texts)}")
        self.index = {t: i for i, t in enumerate(texts)}
        self.meta = json.loads((self.path / "meta.json").read_text())

    def rows(self, texts: list[str]) -> "CachedRows":
        return CachedRows(self, np.array([self.index[t] for t in texts], dtype=np.int64))


class CachedRows:
    """A fold's part (train / val / test) as cache rows; `batch` gives the upper model's inputs."""

    def __init__(self, cache: HiddenCache, rows: np.ndarray):
        self.cache, self.rows = cache, rows
        self.lengths = cache.lengths[rows]

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, idx: np.ndarray, multiple: int = PAD_MULTIPLE) -> dict[str, torch.Tensor]:
        """hidden [B, T, H] float32 (zeros past each row's end) and attention_mask [B, T], T a multiple of
        `multiple` (batching.eval_plan's for predicting, train_width_multiple's for training)."""
        lengths = self.lengths[idx]
        width = round_up(int(lengths.max()), multiple)
        hidden = np.zeros((len(idx), width, self.cache.hidden.shape[1]), dtype=np.float32)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for j, r in enumerate(self.rows[idx]):
            start, end = self.cache.offsets[r], self.cache.offsets[r + 1]
            hidden[j, :end - start] = self.cache.hidden[start:end]
            mask[j, :end - start] = 1
        return {"hidden": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(mask)}


def unique_texts(*columns) -> list[str]:
    """Every distinct text of the given sequences, in first-seen order."""
    return list(dict.fromkeys(t for col in columns for t in col))


def model_texts(cfg, train, test, extra) -> list[str]:
    """Every text a model can meet, in its text variant: train, test (pseudo rows are test texts), augmented rows."""
    column = text_column(cfg)
    return unique_texts(train[column], test[column], [] if extra is None else extra[column])


def open_for_model(cfg, texts: list[str], root: Path, n_classes: int):
    """The model's shared cache over `texts`, built first if needed: the frozen-layer cache of a transformer with
    freeze_layers > 0, embed_lr's pooled table, or None for a model without one (config.shares_cache)."""
    from .config import shares_cache
    if not shares_cache(cfg):
        return None
    if cfg.kind == "embed_lr":
        return open_pooled(cfg.options, texts, root)
    return open_or_build(cfg, texts, root, n_classes)


def open_or_build(cfg, texts: list[str], root: Path, n_classes: int) -> HiddenCache:
    """The cache for `cfg` and `texts` under `root`, built first if no run has built it (one builder at a time)."""
    from .batching import encode
    from .encoder import build_model, load_tokenizer, resolve_backbone
    backbone = resolve_backbone(cfg.backbone)
    path = Path(root) / cache_key(cfg, backbone, texts)
    with build_lock(path):
        if not (path / "meta.json").exists():
            tokenizer = load_tokenizer(cfg.backbone)
            seqs = encode(tokenizer, texts, cfg.max_len, cfg.truncation)
            model = build_model(cfg, n_classes)
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            model.to(device)
            meta = {"backbone": cfg.backbone, "max_len": cfg.max_len, "truncation": cfg.truncation,
                    "text": cfg.text, "freeze_layers": cfg.freeze_layers, "dtype": "float16"}
            build(model, seqs, tokenizer.pad_token_id, cfg, path, meta)
    return HiddenCache(path, texts)


class PooledEmbeddings:
    """embed_lr's table: one mean-pooled embedding per text [n_texts, H], looked up by text."""

    def __init__(self, table: np.ndarray, texts: list[str], path: Path):
        self.table, self.index, self.width = table, {t: i for i, t in enumerate(texts)}, table.shape[1]
        self.path = path

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.table[[self.index[t] for t in texts]], dtype=np.float32)


@torch.inference_mode()
def pool(encoder, seqs: list[np.ndarray], pad_id: int, max_len: int, batch_size: int) -> np.ndarray:
    """Mean of the last hidden state over real tokens, per text [n, H] (fp32, length-sorted batches)."""
    from .encoder import masked_mean
    out = np.zeros((len(seqs), encoder.config.hidden_size), dtype=np.float32)
    for idx, batch in inference_batches(seqs, pad_id, max_len, batch_size, next(encoder.parameters()).device):
        hidden = encoder(**batch).last_hidden_state
        out[idx] = masked_mean(hidden, batch["attention_mask"]).float().cpu().numpy()
    return out


def embed_texts(p, texts: list[str]) -> np.ndarray:
    """embed_lr's embeddings [n, H] float32 of any texts (params `p`: backbone, max_len, truncation, normalize)."""
    from .batching import encode
    from .encoder import load_encoder, load_tokenizer
    tokenizer = load_tokenizer(p.backbone)
    seqs = encode(tokenizer, texts, p.max_len, p.truncation)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = load_encoder(p.backbone).to(device).eval()
    table = pool(encoder, seqs, tokenizer.pad_token_id, p.max_len, p.batch_size)
    if p.normalize:
        table /= np.clip(np.linalg.norm(table, axis=1, keepdims=True), 1e-12, None)
    return table


def open_pooled(p, texts: list[str], root: Path) -> PooledEmbeddings:
    """embed_texts over `texts`, computed once and kept in `root` (key: the backbone's files, the params, texts)."""
    from .encoder import resolve_backbone
    from .io import atomic_path
    settings = {"backbone": backbone_digest(resolve_backbone(p.backbone)), "max_len": p.max_len,
                "truncation": p.truncation, "normalize": p.normalize}
    path = Path(root) / f"pooled-{p.max_len}-{digest(settings, texts)[:16]}.npy"
    with build_lock(path):
        if not path.exists():
            t0 = time.perf_counter()
            table = embed_texts(p, texts)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, table)
            print(f"  embeddings {path.name}: {len(texts)} texts in {time.perf_counter() - t0:.0f}s")
    return PooledEmbeddings(np.load(path), texts, path)
