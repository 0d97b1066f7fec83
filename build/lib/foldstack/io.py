"""File helpers shared by every stage: atomic writes and CSV reading with one-line errors.

Every artefact is written to a temporary name in its own folder and renamed into place, so an interrupted stage
never leaves a half-written file that Make would take as done.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd


class InputError(ValueError):
    """Bad user input; the message is one line naming the file, row and column."""


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
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


def read_table(path: str | Path, sep: str, required: list[str]) -> pd.DataFrame:
    """Read a CSV/TSV as strings; fail with one line if it is missing, empty, mis-separated or lacks a column."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as err:
        raise InputError(f"{path}: cannot parse with separator {sep!r}: {str(err).splitlines()[0]}") from None
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


def check_unique_ids(df: pd.DataFrame, id_col: str, path) -> None:
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
