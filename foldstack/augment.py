"""augment stage: processed training rows -> augmented training rows, one set per run (EDA or back-translation).

Reads  features/augment.yaml (the `eda:` and `backtrans:` sections), data/processed/train.parquet
Writes features/<set>.parquet  src_id, kind, text, text_lemma, label (or labels): one row per augmented text
       features/backtrans.parts/  finished back-translation chunks while the set is being built (then removed)
Run    python -m foldstack.augment --set=eda [--config=features/augment.yaml --train=data/processed/train.parquet
           --out=features/eda.parquet --workers=2 --n_aug=2 ...]   (--key=value overrides the set's YAML keys)

Augmented rows only ever train: the train stage adds a row to fold k's training only when its source row (src_id)
is on fold k's training side, so no validation row is seen in disguise. Copies identical to their source are
dropped. The output stores a key (hash of the set's config + of the processed rows); a rerun whose key matches does
nothing, and an interrupted back-translation resumes at its first unfinished chunk.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from . import __version__, config
from .config import ConfigError
from .errors import one_line_errors
from .io import atomic_path
from .text import lemmatize_texts, normalise

META_KEY = b"foldstack.augment"


@dataclass(frozen=True)
class Eda:
    """EDA (Wei & Zou 2019). alpha_* = fraction of a text's words each operation changes (0 turns it off)."""
    alpha_sr: float = 0.1   # synonym replacement (WordNet, non-stopwords)
    alpha_ri: float = 0.1   # random insertion of a synonym of a random non-stopword
    alpha_rs: float = 0.1   # random swap
    alpha_rd: float = 0.1   # random deletion
    n_aug: int = 1          # copies per row, each by one operation; the paper: 4 for small data, 1-2 for large
    seed: int = 42          # of the operations' random choices

    def check(self) -> list[tuple[str, str]]:
        bad = [(k, "must be in [0, 1]") for k in ("alpha_sr", "alpha_ri", "alpha_rs", "alpha_rd")
               if not 0 <= getattr(self, k) <= 1]
        if self.n_aug < 1:
            bad.append(("n_aug", "must be at least 1"))
        if not any(getattr(self, k) for k in ("alpha_sr", "alpha_ri", "alpha_rs", "alpha_rd")):
            bad.append(("alpha_sr", "at least one alpha must be above 0"))
        return bad


@dataclass(frozen=True)
class Backtrans:
    """English -> pivot -> English. apertium: offline, rule-based; marian: Hugging Face models, GPU if present."""
    engine: str = "apertium"  # apertium (offline, installed by make setup where apt works) | marian
    apertium_modes: tuple[str, ...] = ("eng-spa", "spa-eng_US")  # the pipe, in order (`apertium -l` lists modes)
    marian_forward: str = "Helsinki-NLP/opus-mt-en-es"  # Hub id or local directory
    marian_back: str = "Helsinki-NLP/opus-mt-es-en"     # the way back to English
    batch_size: int = 16     # marian: sentences per generate() call
    max_length: int = 256    # marian: tokens in and out per sentence
    num_beams: int = 1       # marian: 1 = greedy
    max_chars: int = 500     # sentences longer than this are cut at word boundaries
    chunk_size: int = 1000   # texts per resumable chunk (apertium: one pipe per chunk)

    def check(self) -> list[tuple[str, str]]:
        bad = [] if self.engine in ("apertium", "marian") else [("engine", "must be apertium or marian")]
        if self.engine == "apertium" and len(self.apertium_modes) < 2:
            bad.append(("apertium_modes", "name the forward and the backward mode"))
        for key in ("batch_size", "max_length", "num_beams", "max_chars", "chunk_size"):
            if getattr(self, key) < 1:
                bad.append((key, "must be at least 1"))
        return bad


SETS = {"eda": Eda, "backtrans": Backtrans}


@dataclass(frozen=True)
class Sections:
    """features/augment.yaml itself: one section per augmented set, each read into its dataclass above."""
    eda: Eda = Eda()                      # the eda: section
    backtrans: Backtrans = Backtrans()    # the backtrans: section
    NESTED = SETS  # keys read into a dataclass of their own: both sections are checked whenever the file is read

    def check(self) -> list[tuple[str, str]]:
        return []


def load_config(path: str | Path, name: str, overrides: dict | None = None):
    """The `name:` section of augment.yaml as its frozen dataclass (overrides: that section's keys); bad keys stop
    with one line naming them (`eda.alpha_sr`)."""
    if name not in SETS:
        raise ConfigError(f"{path}: unknown augmented set {name!r} (known: {', '.join(SETS)})")
    qualified = {k if "." in k else f"{name}.{k}": v for k, v in (overrides or {}).items()}  # --n_aug or --eda.n_aug
    return getattr(config.load(Sections, path, qualified), name)


def data_hash(train: pd.DataFrame) -> str:
    """Hash of what augmentation reads: ids, texts and labels of the processed train rows."""
    h = hashlib.sha256()
    for col in [c for c in ("id", "text", "label", "labels") if c in train.columns]:
        h.update(col.encode() + b"\0" + "\x1f".join(map(str, train[col].tolist())).encode() + b"\0")
    return h.hexdigest()[:16]


def cache_key(cfg, train: pd.DataFrame) -> dict:
    return {"set": type(cfg).__name__.lower(), "config": config.config_hash(cfg), "data": data_hash(train)}


def stored_key(path: Path) -> dict | None:
    """The key saved in an augmented parquet's metadata, or None (missing, unreadable or unkeyed file)."""
    import pyarrow.parquet as pq
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[META_KEY])["key"]
    except (OSError, KeyError, ValueError):
        return None


def save_keyed(path: Path, df: pd.DataFrame, key: dict, cfg) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {"key": key, "config": dataclasses.asdict(cfg), "version": __version__}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def finish(train: pd.DataFrame, src_pos, kinds, texts, workers: int) -> pd.DataFrame:
    """Augmented texts -> the output table: whitespace-normalised per field, lemmatized, labelled, no copies that
    equal their source."""
    from .text import FIELD_SEP
    texts = [f" {FIELD_SEP} ".join(normalise(f) for f in t.split(FIELD_SEP)) for t in texts]
    src = train.iloc[list(src_pos)].reset_index(drop=True)
    out = pd.DataFrame({"src_id": src["id"].astype(str), "kind": list(kinds), "text": texts})
    out = out[(out["text"] != src["text"]) & (out["text"].str.strip() != "")].reset_index(drop=True)
    from nltk.corpus import wordnet
    wordnet.ensure_loaded()  # once here: lemmatizer processes fork from this one instead of each loading it
    out["text_lemma"] = lemmatize_texts(out["text"].tolist(), workers) if len(out) else []
    label = "labels" if "labels" in train.columns else "label"
    out[label] = train.set_index(train["id"].astype(str))[label].reindex(out["src_id"]).to_numpy()
    return out


def build_eda(train: pd.DataFrame, cfg: Eda, workers: int) -> pd.DataFrame:
    from . import eda
    rows = eda.augment_texts(train["id"].astype(str).tolist(), train["text"].tolist(), cfg, workers)
    return finish(train, [r[0] for r in rows], [f"eda:{r[1]}" for r in rows], [r[2] for r in rows], workers)


def build_backtrans(train: pd.DataFrame, cfg: Backtrans, out: Path, key: dict, workers: int) -> pd.DataFrame:
    from . import backtrans
    parts = out.with_suffix(".parts")
    chunk_key = f"{key['config']}{key['data']}"[:16]
    ids = train["id"].astype(str).tolist()
    done = backtrans.run_chunks(ids, train["text"].tolist(), lambda: backtrans.make_engine(cfg), parts, chunk_key,
                                cfg.chunk_size, cfg.max_chars)
    return finish(train, range(len(train)), [f"backtrans:{cfg.engine}"] * len(done), done["text"].tolist(), workers)


def run(name: str, cfg, train: pd.DataFrame, out: Path, workers: int = 2) -> bool:
    """Build features/<name>.parquet unless its stored key matches; True when it was (re)built."""
    key = cache_key(cfg, train)
    if out.exists() and stored_key(out) == key:
        print(f"augment {name}: {out} is up to date (config {key['config']}, data {key['data']})")
        return False
    start = time.perf_counter()
    if name == "eda":
        df = build_eda(train, cfg, workers)
    else:
        df = build_backtrans(train, cfg, out, key, workers)
    save_keyed(out, df, key, cfg)
    shutil.rmtree(out.with_suffix(".parts"), ignore_errors=True)  # finished chunks are in `out` now
    secs = time.perf_counter() - start
    print(f"augment {name}: {len(df)} augmented rows from {len(train)} sources in {secs:.1f}s "
          f"({len(train) / secs:.0f} sources/s) -> {out}")
    return True


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=config.keys_epilog("features/augment.yaml", ("eda.", Eda),
                                                           ("backtrans.", Backtrans), overrides=True))
    ap.add_argument("--set", required=True, choices=sorted(SETS), help="which augmented set to build")
    ap.add_argument("--config", default="features/augment.yaml", help="augmentation config")
    ap.add_argument("--train", default="data/processed/train.parquet", help="processed training rows")
    ap.add_argument("--out", default=None, help="default: features/<set>.parquet")
    ap.add_argument("--workers", type=int, default=2, help="processes for EDA and lemmatization")
    args, overrides = ap.parse_known_args(argv)
    from .backtrans import AlignmentError, EngineMissing
    try:
        cfg = load_config(args.config, args.set, config.parse_overrides(overrides))
        train = pd.read_parquet(args.train)
        run(args.set, cfg, train, Path(args.out or f"features/{args.set}.parquet"), args.workers)
    except (ConfigError, EngineMissing, AlignmentError) as err:
        sys.exit(f"error: {err}")
    except FileNotFoundError as err:
        sys.exit(f"error: {err.filename}: file not found")


if __name__ == "__main__":
    main()
