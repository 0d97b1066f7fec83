"""pseudo stage: round r-1's test predictions -> the confident test rows that also train round r's models.

Reads  features/pseudo.yaml; round r-1's members (folds/[r<r-1>/]<m>/{manifest.json,fold<k>.npz,test.npy}), picked
       by ensemble/ensemble.yaml's `members`; with `teacher: ensemble` also ensemble/[r<r-1>/]leaderboard.json and
       the chosen method's test.npy; folds/folds.csv; data/processed/{train,test}.parquet + classes.json
Writes features/pseudo_r<r>.parquet  one row per (student fold, test id): id, fold, label | labels (the processed
       format), confidence; with `labels: soft` also probs (the teacher's per-class probabilities, classes.json order)
Run    python -m foldstack.pseudo select --manifests folds/*/manifest.json --ensemble-dir=ensemble \
           --out=features/pseudo_r1.parquet   (round 1 from round 0; round r reads folds/<m>/r<r-1>/, ensemble/r<r-1>/)
       python -m foldstack.pseudo next-round --round=1   (prints 2, or nothing when the rounds should stop)
       python -m foldstack.pseudo score --solution=data/solution.csv   (per round: pseudo rows and their accuracy,
           nested CV, test score)

Round 0 is the plain pipeline (folds/<m>/, ensemble/<method>/); round r >= 1 lives in folds/<m>/r<r>/ and
ensemble/r<r>/<method>/ (`round_dir`), so rounds never overwrite each other.

Leak-free by construction. Pseudo rows only ever train (train.py adds fold k's rows, `fold == k`, to fold k's
training side; validation and OOF are original rows). With the default per-fold teacher, fold k's student learns
only from fold-k models of the previous round: they were trained without fold k's rows, and, by the same rule one
round earlier, on pseudo labels that never saw fold k either. So fold k's validation score stays out-of-fold in
every round, and the rounds' nested CV can be compared honestly.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, metrics
from .errors import one_line_errors
from .io import InputError
from .labels import classes_json, read_pseudo


@dataclass(frozen=True)
class Pseudo:
    """features/pseudo.yaml (unknown keys and wrong types are errors)."""
    teacher: str = "per_fold"   # per_fold: fold k's student learns from fold-k models only | ensemble (leaks)
    threshold: float = 0.9      # a row's confidence: top probability; multi-label: every label's max(p, 1 - p)
    agreement: bool = True      # also every member decides as the teacher does (top-1; multi-label: each side)
    max_fraction: float = 0.5   # at most this share of the test set per student fold, the most confident first
    labels: str = "hard"        # hard (class | label set) | soft (probabilities; transformers only)
    min_delta: float = 0.001    # another round only if the last one improved the ensemble's nested CV this much
    max_rounds: int = 3         # pseudo-label rounds after round 0
    retrain: tuple[str, ...] | None = None  # models retrained in every round; null: all. The others keep their
    #                                         round-0 folds in every round's blend and teachers (slow transformers)

    def check(self) -> list[tuple[str, str]]:
        bad = [(k, f"must be one of {', '.join(v)}") for k, v in
               {"teacher": ("per_fold", "ensemble"), "labels": ("hard", "soft")}.items() if getattr(self, k) not in v]
        bad += [(k, "must be in (0, 1]") for k in ("threshold", "max_fraction") if not 0 < getattr(self, k) <= 1]
        if self.max_rounds < 0:
            bad.append(("max_rounds", "must be at least 0"))
        if self.retrain is not None and not self.retrain:
            bad.append(("retrain", "must name at least one model (null: every model)"))
        return bad


def round_dir(base, r: int) -> Path:
    """Round r's folder under folds/ or ensemble/: the base itself for round 0, base/r<r> after (as in the Makefile)."""
    return Path(base) if r == 0 else Path(base) / f"r{r}"


def decisions(probs: np.ndarray, multilabel: bool) -> np.ndarray:
    """[..., n, C] -> top-1 class [..., n]; multi-label: each label's side (p >= 0.5) [..., n, C]."""
    return probs >= 0.5 if multilabel else probs.argmax(-1)


def confidence(probs: np.ndarray, multilabel: bool) -> np.ndarray:
    """[n, C] -> [n]: the top probability; multi-label: the least sure label's max(p, 1 - p)."""
    return np.maximum(probs, 1 - probs).min(-1) if multilabel else probs.max(-1)


def agreement(teacher: np.ndarray, members: np.ndarray, multilabel: bool) -> np.ndarray:
    """Rows [n] on which every member [M, n, C] decides as the teacher [n, C] does (every label, for multi-label)."""
    same = decisions(members, multilabel) == decisions(teacher, multilabel)  # [M, n] or [M, n, C]
    return same.all(axis=(0, 2) if multilabel else 0)


def select_rows(teacher: np.ndarray, members: np.ndarray, cfg: Pseudo, multilabel: bool) -> np.ndarray:
    """Positions of the chosen test rows, most confident first: confident, agreed on, at most max_fraction of them."""
    conf = confidence(teacher, multilabel)
    ok = conf >= cfg.threshold
    if cfg.agreement:
        ok &= agreement(teacher, members, multilabel)
    if multilabel:  # every training row has a label (prep refuses empty ones): "none applies" is the teacher wrong
        ok &= (teacher >= 0.5).any(1)
    order = np.argsort(-conf, kind="stable")
    return order[ok[order]][:int(cfg.max_fraction * len(teacher))]


def fold_rows(ids: np.ndarray, fold: int, teacher: np.ndarray, rows: np.ndarray, multilabel: bool,
              soft: bool) -> pd.DataFrame:
    """Student fold `fold`'s pseudo rows: id, fold, label | labels, confidence (+ probs when soft)."""
    p = teacher[rows]
    df = pd.DataFrame({"id": ids[rows], "fold": np.full(len(rows), fold, dtype=np.int64)})
    if multilabel:
        df["labels"] = [np.flatnonzero(on).tolist() for on in p >= 0.5]
    else:
        df["label"] = p.argmax(1)
    df["confidence"] = confidence(p, multilabel).astype(np.float32)
    if soft:
        df["probs"] = list(p.astype(np.float32))
    return df


def pseudo_frame(teachers: np.ndarray, members: np.ndarray, ids: np.ndarray, cfg: Pseudo,
                 multilabel: bool) -> pd.DataFrame:
    """teachers [K, n, C] and members [K, M, n, C] (fold k's) -> every student fold's pseudo rows, stacked."""
    return pd.concat([fold_rows(ids, k, teachers[k], select_rows(teachers[k], members[k], cfg, multilabel),
                                multilabel, cfg.labels == "soft") for k in range(len(teachers))], ignore_index=True)


def fold_teachers(fold_tests: np.ndarray) -> np.ndarray:
    """Members' fold-k test predictions [K, M, n, C] -> fold k's teacher [K, n, C]: their plain mean.

    The mean fits nothing on labels. Blend weights or a stacker fitted on all OOF rows have seen fold k's labels,
    and fold k's student would learn them back through its pseudo labels; the fold-k models never saw them.
    """
    return fold_tests.mean(1)


def next_round(cvs: list[float], metric: str, cfg: Pseudo) -> tuple[bool, str]:
    """The chosen ensemble's nested CV of rounds 0..r -> (run round r + 1?, why)."""
    r = len(cvs) - 1
    if r >= cfg.max_rounds:
        return False, f"max_rounds {cfg.max_rounds} reached"
    if r == 0:
        return True, "round 1 is the first pseudo-label round"
    gain = (cvs[r] - cvs[r - 1]) * (1 if metrics.GREATER_IS_BETTER[metric] else -1)
    verdict = ">=" if gain >= cfg.min_delta else "<"
    return gain >= cfg.min_delta, f"round {r} changed the nested CV by {gain:+.4f} {verdict} min_delta {cfg.min_delta}"


def best_round(cvs: list[float], metric: str) -> int:
    sign = 1 if metrics.GREATER_IS_BETTER[metric] else -1
    return int(np.argmax(sign * np.asarray(cvs)))  # the earliest on a tie


def chosen_cv(board: dict) -> float:
    """The nested CV of the method the leaderboard submits."""
    return next(row["cv"] for row in board["rows"] if row["kind"] == "method" and row["name"] == board["chosen"])


def read_boards(ensemble_root, last: int) -> list[dict]:
    """Leaderboards of rounds 0..last; InputError when one is missing."""
    paths = [round_dir(ensemble_root, r) / "leaderboard.json" for r in range(last + 1)]
    for path in paths:
        if not path.exists():
            raise InputError(f"{path} not found: run `make submit ROUND=...` for that round first")
    return [json.loads(p.read_text()) for p in paths]


def member_fold_tests(manifests: list[str], ens_cfg, n_folds: int) -> np.ndarray:
    """Every member's fold-k test predictions -> [K, M, n_test, C] (members as ensemble.yaml picks them)."""
    from .ensemble import select
    dirs = [path.parent for _, path in select(manifests, ens_cfg)]
    return np.stack([np.stack([np.load(d / f"fold{k}.npz")["test"] for d in dirs]) for k in range(n_folds)])


def load_teachers(args, cfg: Pseudo, ens_cfg) -> tuple[np.ndarray, np.ndarray, bool]:
    """(teachers [K, n, C], members [K, M, n, C], multilabel) of the round that args.manifests describe."""
    import dataclasses

    from .ensemble import load_members
    # The alignment check and the plain members: per-fold teachers and the agreement check read the members' own
    # probabilities (teacher: ensemble reads the chosen blend, which may be neighbour-smoothed).
    plain = dataclasses.replace(ens_cfg, neighbours=0.0, neighbours_embed=0.0)
    data = load_members(args.manifests, plain, Path(args.processed), Path(args.folds))
    n_folds = int(data.fold_of.max()) + 1
    if cfg.teacher == "per_fold":
        members = member_fold_tests(args.manifests, ens_cfg, n_folds).astype(np.float64)
        return fold_teachers(members), members, data.multilabel
    ens_dir = Path(args.ensemble_dir)
    board = json.loads((ens_dir / "leaderboard.json").read_text())
    teacher = np.load(ens_dir / board["chosen"] / "test.npy").astype(np.float64)
    members = data.test.transpose(1, 0, 2)  # [M, n, C]: the members' fold-mean test predictions
    return (np.broadcast_to(teacher, (n_folds, *teacher.shape)),
            np.broadcast_to(members, (n_folds, *members.shape)), data.multilabel)


def run_select(args, cfg: Pseudo) -> None:
    from .ensemble import Ensemble
    from .io import save_parquet
    teachers, members, multilabel = load_teachers(args, cfg, config.load(Ensemble, args.ensemble_config))
    ids = pd.read_parquet(Path(args.processed) / "test.parquet", columns=["id"])["id"].astype(str).to_numpy()
    df = pseudo_frame(teachers, members, ids, cfg, multilabel)
    save_parquet(args.out, df)
    sizes = df["fold"].value_counts().reindex(range(len(teachers)), fill_value=0).tolist()
    print(f"pseudo {args.out}: teacher {cfg.teacher}, {cfg.labels} labels; rows per student fold {sizes} of "
          f"{len(ids)} test rows (threshold {cfg.threshold}, cap {int(cfg.max_fraction * len(ids))})")


def run_next_round(args, cfg: Pseudo) -> None:
    boards = read_boards(args.ensemble_root, args.round)
    cvs, metric = [chosen_cv(b) for b in boards], boards[0]["metric"]
    go, why = next_round(cvs, metric, cfg)
    trail = "  ".join(f"r{r} {cv:.4f}" for r, cv in enumerate(cvs))
    best = best_round(cvs, metric)
    print(f"pseudo: nested CV {metric} per round: {trail}; {why}: "
          + (f"next round {args.round + 1}" if go else f"stop; best round {best} (make submit ROUND={best})"),
          file=sys.stderr)
    if go:
        print(args.round + 1)


def pseudo_accuracy(df: pd.DataFrame, solution_ids: pd.Series, y: np.ndarray, multilabel: bool) -> float:
    """Share of pseudo rows whose hard label (multi-label: label set) is the solution's; nan without rows."""
    if df.empty:
        return float("nan")
    truth = y[pd.Index(solution_ids.astype(str)).get_indexer(df["id"])]
    if multilabel:
        from .labels import label_matrix
        return float((label_matrix(df["labels"], y.shape[1]) == truth).all(1).mean())
    truth = truth.argmax(1) if truth.ndim == 2 else truth.astype(np.int64)
    return float((df["label"].to_numpy() == truth).mean())


def run_score(args, cfg: Pseudo) -> None:
    """Per round: pseudo rows per student fold and their accuracy against the solution, nested CV, test score."""
    from .ensemble import holdout_scores
    from .io import read_table
    from .score import unseen_labels
    from .labels import label_y
    comp = config.load(config.Competition, args.competition)
    processed = Path(args.processed)
    classes = classes_json(processed)["classes"]
    solution = read_table(args.solution, ",", [comp.id])
    y = label_y(solution, classes + unseen_labels(solution, classes, comp), comp, args.solution)  # unseen: misses
    last = 0
    while (round_dir(args.ensemble_root, last + 1) / "leaderboard.json").exists():
        last += 1
    print(f"pseudo-label rounds ({comp.metric}; nested CV of the submitted blend; test: against {args.solution})")
    for r, board in enumerate(read_boards(args.ensemble_root, last)):
        test = holdout_scores(board, comp, processed, args.solution)[board["chosen"]]
        line = f"  round {r}: {board['chosen']:<10} CV {chosen_cv(board):.4f}  test {test:.4f}"
        if r:
            df = read_pseudo(Path(args.features) / f"pseudo_r{r}.parquet", solution[comp.id], len(classes),
                             comp.multilabel)
            line += (f"  pseudo rows per fold {len(df) / max(1, df['fold'].nunique()):.0f}, accuracy "
                     f"{pseudo_accuracy(df, solution[comp.id], y, comp.multilabel):.4f}")
        print(line)


@one_line_errors
def main(argv=None) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default="features/pseudo.yaml", help="the pseudo-label config")
    common.add_argument("--ensemble-config", default="ensemble/ensemble.yaml", help="its members: the teachers")
    config.add_path_options(common, "competition", "processed", "folds")
    common.add_argument("--manifests", nargs="*", default=None, help="select: round r-1's members' manifests")
    common.add_argument("--ensemble-dir", default="ensemble", help="select: round r-1's ensemble/[r<r-1>]")
    common.add_argument("--out", default=None, help="select: features/pseudo_r<r>.parquet")
    common.add_argument("--round", type=int, default=0, help="next-round: the round just finished")
    common.add_argument("--ensemble-root", default="ensemble", help="next-round, score: round r is ensemble/r<r>")
    common.add_argument("--features", default="features", help="score: where pseudo_r<r>.parquet live")
    common.add_argument("--solution", default="data/solution.csv", help="score: the test answers")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=config.keys_epilog("features/pseudo.yaml", ("", Pseudo)))
    sub = ap.add_subparsers(dest="command", required=True)
    for name, text in [("select", "write round r's pseudo rows from round r-1"),
                       ("next-round", "print r + 1 if round r + 1 should run, else nothing"),
                       ("score", "per round: pseudo rows and their accuracy, nested CV, test score")]:
        sub.add_parser(name, parents=[common], help=text)
    args = ap.parse_args(argv)
    cfg = config.load(Pseudo, args.config)
    if args.command == "select":
        if not args.manifests or not args.out:
            raise InputError("select needs --manifests (round r-1's members) and --out")
        run_select(args, cfg)
    else:
        (run_next_round if args.command == "next-round" else run_score)(args, cfg)


if __name__ == "__main__":
    main()
