"""Stage configs: YAML files loaded into frozen dataclasses; unknown keys and wrong types are errors.

`data/competition.yaml` describes the competition (files, columns, task, metric, folds); `models/<name>.yaml`
describes one base model and `models/pretrain/<name>.yaml` one within-task pretraining run. Every error names the
file and the key. `--key=value` overrides given on a command line go through the same checks as the YAML (see
`load`).
"""
from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError  # noqa: F401 - the stages catch config.ConfigError
from .kinds import PARAMS, Params


class Loader(yaml.SafeLoader):
    """YAML with only true / false as booleans (YAML 1.2): YAML 1.1 also reads on / off / yes / no as booleans, so
    `amp: off` or `--amp=off` would arrive as False and fail the string check."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                             list("tTfF"))


def read_yaml(text: str):
    return yaml.load(text, Loader=Loader)


TASKS = ("multiclass", "binary", "multilabel")
METRICS = ("accuracy", "macro_f1", "micro_f1", "log_loss")


@dataclass(frozen=True)
class Competition:
    """data/competition.yaml: where the files are and what they mean."""
    train: str = "data/raw/train.csv"   # the labelled rows
    test: str = "data/raw/test.csv"     # the rows to predict
    sample_submission: str = "data/raw/sample_submission.csv"  # the submission format: columns, ids, row order
    sep: str = ","                 # "\t" for TSV files such as iFLYTEK's
    encoding: str = "utf-8"        # of train and test (latin-1, cp1252, gbk ...); a UTF-8 byte-order mark is dropped
    id: str = "id"                 # the id column of train, test and sample
    text: tuple[str, ...] = ("text",)  # joined with the tokenizer's separator (title + abstract)
    label: tuple[str, ...] = ("label",)  # one column, or one 0/1 column per label (multilabel)
    label_sep: str = " "           # multilabel in one column: labels split on this ("earn acq")
    task: str = "multiclass"       # multiclass | binary | multilabel
    group: str | None = None       # rows sharing a group stay in one fold
    metric: str = "accuracy"       # accuracy | macro_f1 | micro_f1 | log_loss
    n_folds: int = 5               # folds of the cross-validation every model and blend shares
    seed: int = 42                 # of the fold assignment
    submission_values: str = "label"  # label | probability (binary: P(positive); multiclass: one column per class)

    def check(self) -> list[tuple[str, str]]:
        """(key, problem) pairs; empty when the config is consistent."""
        bad = []
        if self.task not in TASKS:
            bad.append(("task", f"must be one of {', '.join(TASKS)}"))
        if self.metric not in METRICS:
            bad.append(("metric", f"must be one of {', '.join(METRICS)}"))
        if self.n_folds < 2:
            bad.append(("n_folds", "must be at least 2"))
        if not self.text:
            bad.append(("text", "name at least one text column"))
        if len(self.label) > 1 and self.task != "multilabel":
            bad.append(("label", "several label columns only make sense with task: multilabel"))
        if self.submission_values not in ("label", "probability"):
            bad.append(("submission_values", "must be label or probability"))
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            bad.append(("encoding", "is not an encoding Python knows (utf-8, latin-1, cp1252, gbk ...)"))
        return bad

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"


AMP = ("auto", "bf16", "fp16", "off")
HEADS = ("bilstm", "cls", "mean", "last4")
TRUNCATION = ("head", "tail", "head_tail")
ATTENTION = ("auto", "eager", "sdpa")
KINDS = ("transformer", "tfidf_lr", "tfidf_lgbm", "tfidf_svm", "nbsvm", "embed_lr")


@dataclass(frozen=True)
class Model:
    """models/<name>.yaml: one base model. Defaults follow the recipe (anchors.md)."""
    kind: str = "transformer"      # transformer | tfidf_lr | tfidf_lgbm | tfidf_svm | nbsvm | embed_lr
    backbone: str = "minilm"       # Hub id, local directory, or the alias minilm (installed offline)
    head: str = "bilstm"           # bilstm (the recipe) | cls | mean | last4 (concatenated [CLS] of the top 4 layers)
    lstm_hidden: int = 256         # per direction
    dropout: float = 0.1           # before the output layer
    attention: str = "auto"        # auto: transformers' default (SDPA) | eager (faster on CPU, more memory) | sdpa
    attention_dropout: float | None = None  # None keeps the backbone's; 0 trains ~1.6x faster on CPU (offline.md)
    max_len: int = 256             # tokens per text after truncation (`make prep` recommends one)
    truncation: str = "head"       # head_tail keeps the first quarter and the last three quarters (Sun et al.)
    epochs: int = 2                # the best epoch by validation score predicts OOF and test
    batch_size: int = 16           # rows per micro-batch
    grad_accum: int = 1            # micro-batches per optimizer step (effective batch = batch_size * grad_accum)
    lr: float = 2e-5               # top encoder layer; lower layers get lr * layer_decay**depth
    layer_decay: float = 0.95      # per layer below the top; embeddings lowest
    head_lr: float = 1e-4          # the new head's lr
    weight_decay: float = 0.01     # AdamW; not on biases and LayerNorm weights
    warmup: float = 0.1            # fraction of optimizer steps
    max_grad_norm: float = 1.0     # gradient clipping before each optimizer step
    amp: str = "auto"              # auto (bf16 where native, fp16 on older GPUs, else fp32) | bf16 | fp16 | off
    text: str = "raw"              # raw | lemma
    augment: tuple[str, ...] = ()  # augmented sets to train with: features/<name>.parquet (e.g. [eda, backtrans])
    freeze_layers: int = 0         # embeddings + this many lowest layers frozen; their outputs cached once for all folds
    seeds: tuple[int, ...] = ()    # several seeds per fold, probabilities averaged (empty: just `seed`)
    eval_batch_size: int = 64      # rows per batch when predicting validation and test (on a CPU also <= 2048 tokens)
    keep_models: bool = True       # keep each fold's fitted model beside its OOF part (folds/<m>/fold<k>.safetensors
    #                                or .joblib): `make predict` and `make export` need them; false: OOF arrays only
    seed: int = 42                 # of the head's initialisation and the batch order (offset by the fold)
    params: dict = field(default_factory=dict)  # a classical kind's options as written; read them as `.options`

    @property
    def options(self) -> Params | None:
        """A classical kind's `params:` as its dataclass (kinds.py: one per kind, defaults filled in); None for a
        transformer, whose options are the top-level keys. (`params` itself stays the mapping as written, so the
        config hash of folds trained before the dataclasses existed is unchanged.)"""
        return from_mapping(PARAMS[self.kind], self.params, "model", "params.") if self.kind in PARAMS else None

    @classmethod
    def check_raw(cls, raw: dict, where: str) -> None:
        """Each kind has exactly its own keys: a transformer has no `params:`, a classical kind none of the
        transformer's options, and its `params:` are checked against its dataclass (`params.<key>` in errors)."""
        kind = raw.get("kind", cls.kind)
        if kind not in PARAMS:
            if raw.get("params"):
                raise ConfigError(f"{where}: key 'params' belongs to the classical kinds ({', '.join(PARAMS)}); "
                                  "a transformer's options are top-level keys")
            return
        foreign = sorted(set(raw) - SHARED_KEYS)
        if foreign:
            inner = f" (its own is params.{foreign[0]})" if foreign[0] in PARAMS[kind].__dataclass_fields__ else ""
            raise ConfigError(f"{where}: key '{foreign[0]}' is a transformer option; kind: {kind} does not use "
                              f"it{inner}")
        from_mapping(PARAMS[kind], raw.get("params") or {}, where, "params.")

    def check(self) -> list[tuple[str, str]]:
        bad = []
        choices = {"kind": KINDS, "head": HEADS,
                   "truncation": TRUNCATION, "amp": AMP, "attention": ATTENTION, "text": ("raw", "lemma")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                bad.append((key, f"must be one of {', '.join(allowed)}"))
        for key in ("max_len", "epochs", "batch_size", "grad_accum", "eval_batch_size"):
            if getattr(self, key) < 1:
                bad.append((key, "must be at least 1"))
        if self.freeze_layers < 0:
            bad.append(("freeze_layers", "must be 0 (train every layer) or more"))
        if not 0 < self.layer_decay <= 1:
            bad.append(("layer_decay", "must be in (0, 1]"))
        if not 0 <= self.warmup < 1:
            bad.append(("warmup", "must be in [0, 1)"))
        for key in ("lr", "head_lr"):
            if not getattr(self, key) > 0:
                bad.append((key, "must be a positive learning rate"))
        if self.weight_decay < 0:
            bad.append(("weight_decay", "must not be negative"))
        if not self.max_grad_norm > 0:
            bad.append(("max_grad_norm", "must be positive"))
        if not 0 <= self.dropout < 1:
            bad.append(("dropout", "must be in [0, 1)"))
        if self.kind not in PARAMS and self.params:
            bad.append(("params", "belongs to the classical kinds; a transformer's options are top-level keys"))
        if self.kind in PARAMS:
            try:
                self.options
            except ConfigError as err:  # built in code with a bad mapping (a YAML's stops earlier, in check_raw)
                bad.append(("params", str(err)))
        return bad


@dataclass(frozen=True)
class Pretrain:
    """models/pretrain/<name>.yaml (foldstack.pretrain); here, not in its stage, because prep's length report reads
    its backbone before the stage has run (shape_source)."""
    backbone: str = "minilm"       # the encoder to continue: minilm, a local directory or a Hub id
    text: str = "raw"              # raw | lemma: the text the fine-tuned models will read
    include_test: bool = True      # the test texts too (no labels are used, so this is fair)
    steps: int = 1000              # optimizer steps
    max_len: int = 128             # tokens per text
    truncation: str = "head_tail"  # head | tail | head_tail, as the model YAML's
    batch_size: int = 32           # texts per step
    lr: float = 5e-5               # AdamW, linear warmup then decay
    weight_decay: float = 0.01     # not on biases and LayerNorm weights
    warmup: float = 0.06           # fraction of steps
    mlm_probability: float = 0.15  # share of tokens selected for masking (80% [MASK], 10% random, 10% kept)
    save_every: int = 200          # steps between resume checkpoints
    amp: str = "auto"              # as the model YAML's amp
    seed: int = 42                 # of the masking and the text order

    def check(self) -> list[tuple[str, str]]:
        bad = []
        if self.text not in ("raw", "lemma"):
            bad.append(("text", "must be raw or lemma"))
        if self.truncation not in TRUNCATION:
            bad.append(("truncation", "must be head, tail or head_tail"))
        for key in ("steps", "max_len", "batch_size", "save_every"):
            if getattr(self, key) < 1:
                bad.append((key, "must be at least 1"))
        if not 0 < self.mlm_probability < 1:
            bad.append(("mlm_probability", "must be in (0, 1)"))
        if self.lr <= 0:
            bad.append(("lr", "must be > 0"))
        return bad


# The keys every kind has; a classical kind has these and its `params:`, nothing else.
SHARED_KEYS = {"kind", "text", "augment", "seeds", "seed", "keep_models", "params"}


def coerce(value, hint, where: str):
    """Check `value` against the type hint `hint`; lists become tuples, ints become floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise ConfigError(f"{where}: expected a name or a list of names, got {value!r}")
        return tuple(coerce(v, args[0], where) for v in items)
    if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads "2e-5" (no dot) as a string; every user writes it that way
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
    base = origin or hint
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {getattr(base, '__name__', base)}, got {value!r}")
    return value


# The workspace paths most stages read, as command-line options: one default and one meaning each.
PATH_OPTIONS = {"competition": ("data/competition.yaml", "the competition config"),
                "processed": ("data/processed", "prep's folder: train/test parquet and classes.json"),
                "folds": ("folds/folds.csv", "the fold of every training row")}


def add_path_options(ap, *names: str) -> None:
    """--competition / --processed / --folds on an argparse parser, with the workspace's defaults."""
    for name in names:
        default, meaning = PATH_OPTIONS[name]
        ap.add_argument(f"--{name}", default=default, help=meaning)


def shown_flag(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def shown_yaml(value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(shown_yaml, value)) + "]"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def keys_help(cls, prefix: str = "", as_flags: bool = True) -> str:
    """For a stage's --help: every key of the config dataclass `cls` with its default and the comment beside it in
    the source (the comments are the keys' documentation), as `--key=value` overrides are written."""
    import inspect
    notes, last = {}, None
    sources = [inspect.getsource(c) for c in reversed(cls.__mro__) if dataclasses.is_dataclass(c)]  # base first
    for line in "\n".join(sources).splitlines():
        field_line = re.match(r"\s+(\w+): [^=]+=[^#]*(?:#\s*(.*))?$", line)
        if field_line:
            last = field_line.group(1)
            if field_line.group(2) or last not in notes:  # a subclass's new default keeps its base's comment
                notes[last] = field_line.group(2) or ""
        elif last and re.match(r"\s+#\s", line):  # a comment continued on the next line
            notes[last] += " " + line.strip().lstrip("#").strip()
        else:
            last = None
    lines = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)"
        name = prefix + f.name
        key = f"  --{name}={shown_flag(default)}" if as_flags else f"  {name}: {shown_yaml(default)}"
        lines.append(key.ljust(30) + f" {notes.get(f.name, '')}".rstrip())
    return "\n".join(lines)


def keys_epilog(what: str, *parts: tuple[str, type], overrides: bool = False) -> str:
    """A stage's --help epilog: every key of the YAML it reads, as (prefix, dataclass) parts, with defaults and
    meanings; `overrides` says the keys can also be given as --key=value."""
    how = "; any of them also as a --key=value override, checked like the YAML" if overrides else ""
    return f"{what} keys (default, meaning{how}):\n" + "\n".join(keys_help(cls, prefix, overrides)
                                                                  for prefix, cls in parts)


def model_keys_help() -> str:
    """train --help's epilog: a transformer's keys, then each classical kind's `params.<key>`."""
    shared = ", ".join(sorted(SHARED_KEYS - {"params"}))
    parts = [keys_epilog("models/<name>.yaml, kind: transformer (all top-level)", ("", Model), overrides=True)]
    for kind, cls in PARAMS.items():
        parts += [f"\nkind: {kind} (top-level keys: {shared}; the rest under params:)", keys_help(cls, "params.")]
    return "\n".join(parts)


def parse_overrides(args: list[str]) -> dict:
    """['--epochs=1', '--lr=3e-5'] -> {'epochs': 1, 'lr': 3e-5}; values are parsed as YAML scalars."""
    out = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"override {arg!r}: expected --key=value")
        key, value = arg[2:].split("=", 1)
        out[key.replace("-", "_")] = read_yaml(value)
    return out


# Keys of earlier versions: the error says what replaced them.
RENAMED = {"save_checkpoint": "replaced by keep_models (default true): every fold keeps its model beside its OOF"}


def yaml_error(path: Path, err: yaml.YAMLError) -> str:
    """One line: the file, the line and column where the parser stopped, and its reason."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    reason = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{path}: {where}not valid YAML: {reason}"


def load(cls, path: str | Path, overrides: dict | None = None):
    """Read the YAML at `path` into the frozen dataclass `cls`, applying `overrides`; validate everything."""
    path = Path(path)
    try:
        raw = read_yaml(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error(path, err)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value")
    return from_mapping(cls, merge_overrides(raw, overrides or {}), str(path))


def merge_overrides(raw: dict, overrides: dict) -> dict:
    """The YAML's mapping with the overrides applied; `params.C` sets key C of the nested mapping `params`."""
    merged = dict(raw)
    for key, value in overrides.items():
        outer, dot, inner = key.partition(".")
        if dot:
            nested = merged.get(outer) or {}
            if not isinstance(nested, dict):
                raise ConfigError(f"override --{key}: key '{outer}' is not a mapping")
            merged[outer] = {**nested, inner: value}
        else:
            merged[key] = value
    return merged


def from_mapping(cls, raw: dict, where: str, section: str = ""):
    """A mapping -> the frozen dataclass `cls`: unknown keys, wrong types and failed checks stop with one line
    naming `where` and the key (`section.key` for a nested mapping such as a model's `params:`). The one
    validation every config goes through: competition, model and its params, augment, pretrain, ensemble,
    pseudo."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: key {section.rstrip('.')!r}: expected a mapping of key: value")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        hint = RENAMED.get(unknown[0])
        raise ConfigError(f"{where}: unknown key '{section}{unknown[0]}' " +
                          (f"({hint})" if hint else f"(known: {', '.join(sorted(known))})"))
    if hasattr(cls, "check_raw"):
        cls.check_raw(raw, where)
    nested = getattr(cls, "NESTED", {})  # key -> dataclass of a section read as a config of its own
    values = {k: from_mapping(nested[k], v or {}, where, f"{section}{k}.") if k in nested
              else coerce(v, hints[k], f"{where}: key '{section}{k}'") for k, v in raw.items()}
    cfg = cls(**values)
    for key, problem in cfg.check():
        raise ConfigError(f"{where}: key '{section}{key}' {problem} (got {getattr(cfg, key)!r})")
    return cfg


def config_hash(cfg) -> str:
    """Short stable hash of a config's values, recorded in manifests to tell runs apart."""
    blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


PRETRAIN_DIR = "models/pretrain"


def uses_encoder(cfg: Model) -> bool:
    """A model that runs a transformer backbone (and so torch): a transformer, or embed_lr's frozen encoder."""
    return cfg.kind in ("transformer", "embed_lr")


def shares_cache(cfg: Model) -> bool:
    """A model whose folds read one cache computed once (foldstack.hidden_cache): a transformer with frozen layers,
    embed_lr's pooled embeddings. `make folds` builds it as its own job before the folds (foldstack.cache)."""
    return cfg.kind == "embed_lr" or (cfg.kind == "transformer" and cfg.freeze_layers > 0)


def pretrain_dir(backbone) -> str | None:
    """models/pretrain/<name> when `backbone` names a `make pretrain` output (its YAML is that path + .yaml)."""
    if isinstance(backbone, str) and Path(backbone).parent.as_posix() == PRETRAIN_DIR:
        return Path(backbone).as_posix()
    return None


def model_deps(cfg: Model) -> list[str]:
    """Files a model's fold targets depend on besides its YAML: features/<set>.parquet per augmented set, and
    models/pretrain/<name>/done.json when its backbone (or embed_lr's) is a `make pretrain` output."""
    deps = [f"features/{name}.parquet" for name in cfg.augment]
    for backbone in (cfg.backbone, getattr(cfg.options, "backbone", None)):
        if pretrain_dir(backbone):
            deps.append(f"{pretrain_dir(backbone)}/done.json")
    return deps


def shape_source(backbone: str) -> str:
    """The backbone whose tokenizer and shape `backbone` has, readable before `make pretrain` has written it: a
    models/pretrain/<name> directory not yet built is models/pretrain/<name>.yaml's backbone (pretraining keeps the
    tokenizer and the architecture); any other name is itself."""
    built = pretrain_dir(backbone)
    if built and not Path(built).is_dir() and Path(f"{built}.yaml").is_file():
        return load(Pretrain, f"{built}.yaml").backbone
    return backbone


def main(argv=None) -> None:
    """`python -m foldstack.config FILE [--model]` validates a config and prints it with every default filled in.
    (What the Makefile needs from the configs comes from foldstack.makevars.)"""
    import argparse
    import sys
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("path", help="the YAML file to read")
    ap.add_argument("--model", action="store_true", help="the file is a models/<name>.yaml")
    args = ap.parse_args(argv)
    try:
        cfg = load(Model if args.model else Competition, args.path)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), end="")


if __name__ == "__main__":
    main()
