"""File helpers shared by every stage: atomic writes and CSV reading with one-line errors.

Every artefact is written to a temporary name in its own folder and renamed into place, so an interrupted stage
never leaves a half-written file that Make would take as done.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

# InputError is re-exported: the stages import it from here
from .errors import InputError, OutputError, is_write_failure, kill_point  # noqa: F401

ROUND_FOLDER = re.compile(r"r[0-9]+")  # a pseudo round's folder inside a member's: folds/<m>/r<r>/


def member_name(folder) -> str:
    """A member's folder -> its model's name: folds/<m> (round 0) and folds/<m>/r<r> (pseudo round r) are both m.
    (makevars refuses model names that look like a round's folder.)"""
    folder = Path(folder)
    return folder.parent.name if ROUND_FOLDER.fullmatch(folder.name) else folder.name


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds. A write that fails
    for want of space or permission raises OutputError naming `path`; `path` itself is untouched."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp{path.suffix}"):
            stale.unlink()  # left by a killed run: Make runs one recipe per target, so no writer owns it now
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
        os.close(fd)
        yield Path(tmp)
        kill_point(f"write:{path.parent.name}/{path.name}")
        os.replace(tmp, path)
        kill_point(f"wrote:{path.parent.name}/{path.name}")
    except OSError as err:
        if not is_write_failure(err):
            raise
        raise OutputError(f"{path}: cannot write ({err.strerror or str(err).splitlines()[0]}); "
                          f"the earlier file, if any, is unchanged") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def save_npy(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def save_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def save_parquet(path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def save_csv(path, df: pd.DataFrame, sep: str = ",") -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, sep=sep)


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_table(path: str | Path, sep: str, required: list[str], encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV/TSV as strings; fail with one line if it is missing, empty, not in `encoding`, mis-separated or
    lacks a column. CRLF line ends and quoted newlines inside a field are read as pandas reads them; a UTF-8
    byte-order mark is dropped (Excel writes one)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""],
                         encoding="utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as err:
        raise InputError(f"{path}: cannot parse with separator {sep!r}: {str(err).splitlines()[0]}") from None
    except UnicodeDecodeError as err:
        raise InputError(undecodable(path, encoding, err)) from None
    if len(df.columns) == 1 and required and df.columns[0] not in required:
        other = "\\t" if sep == "," else ","
        raise InputError(f"{path}: one column {df.columns[0][:60]!r} found with separator {sep!r}; "
                         f"is the file separated by {other!r}? (competition.yaml key 'sep')")
    for col in required:
        if col not in df.columns:
            raise InputError(f"{path}: column {col!r} is missing (columns: {', '.join(map(str, df.columns))})")
    if df.empty:
        raise InputError(f"{path}: no data rows")
    return df


def undecodable(path: Path, encoding: str, err: UnicodeDecodeError) -> str:
    """The line and bytes where `path` stops being `encoding` (pandas' offsets are per chunk: found again here)."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
        where = ""
    except UnicodeDecodeError as full:
        line = data.count(b"\n", 0, full.start) + 1
        where = f"line {line}: bytes {data[full.start:full.end]!r} "
    return (f"{path}: {where}not valid {encoding} ({err.reason}); if the file is latin-1 or cp1252, set "
            f"'encoding: latin-1' (or cp1252) in competition.yaml")


def check_unique_ids(df: pd.DataFrame, id_col: str, path) -> None:
    """No empty and no repeated id."""
    first_missing(df, id_col, path)
    dup = df[id_col].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(f"{path}: row {i + 2}, column {id_col!r}: duplicate id {df[id_col].iloc[i]!r}")


def first_missing(df: pd.DataFrame, col: str, path) -> None:
    """Fail on the first empty/NaN cell of `col`, giving its file row (header = row 1)."""
    missing = df[col].isna().to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise InputError(f"{path}: row {i + 2}, column {col!r}: the value is empty")


def read_augmented(names: tuple[str, ...], features: Path) -> pd.DataFrame | None:
    """The model's augmented sets, stacked (src_id, kind, text, text_lemma); None when it uses none."""
    if not names:
        return None
    return pd.concat([pd.read_parquet(features / f"{name}.parquet") for name in names], ignore_index=True)
