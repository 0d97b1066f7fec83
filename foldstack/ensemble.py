"""ensemble stage: the members' OOF + test arrays -> each method's blended OOF + test arrays, scored out-of-fold.

Reads  ensemble/ensemble.yaml; per member folds/<m>/{manifest.json,oof.npy,test.npy,fold<k>.npz}; folds/folds.csv;
       features/neighbours_k<k>.npz and, with an embed_lr member, features/neighbours_k<k>_<model>.npz (when
       ensemble.yaml's neighbours > 0: foldstack.neighbours, the TF-IDF and the embedding graph);
       data/processed/{train.parquet,test.parquet,classes.json}; data/competition.yaml
Writes ensemble/<method>/oof.npy      float32 [n_train, C]: row i predicted by a blender fitted without row i's fold
       ensemble/<method>/test.npy     float32 [n_test, C]: the blender fitted on every OOF row
       ensemble/<method>/scores.json  nested CV (overall, per fold), log-loss, weights, thresholds, timings
       ensemble/<method>/blender.pkl  the final fitted blender (scikit-learn estimator)
       ensemble/leaderboard.json      members' and methods' CV, and the method `submit` uses
       submissions/<method>.csv       (submit) checked against the sample submission
Run    python -m foldstack.ensemble fit --method=stack_lr --manifests folds/*/manifest.json
       python -m foldstack.ensemble leaderboard|submit --manifests ...   (submit --method=M: that method's file)
       python -m foldstack.ensemble score --solution=data/solution.csv   (the leaderboard with test scores)

Honest CV, on the members' own folds (folds.csv): for held-out fold k a fresh blender is fitted on the other folds'
OOF rows and predicts fold k. Multi-label thresholds for fold k are tuned on an inner cross-prediction over the other
folds only. Before any blend, every member must have the same classes, rows and folds, or the stage stops naming it.
"""
from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, config, metrics  # light: foldstack.makevars imports Ensemble; pandas & co load lazily
from .errors import one_line_errors

METHODS = ("mean", "weighted", "caruana", "stack_lr", "stack_lgbm")


@dataclass(frozen=True)
class Ensemble:
    """ensemble/ensemble.yaml (unknown keys and wrong types are errors)."""
    members: tuple[str, ...] | None = None  # model names; null: every model with folds/<m>/manifest.json
    methods: tuple[str, ...] = METHODS      # mean | weighted | caruana | stack_lr | stack_lgbm: the blends to score
    submit: str = "best"                    # best (by nested CV) or one of the methods
    caruana_metric: str = "metric"          # what greedy selection maximises: metric (the competition's) | log_loss
    caruana_rounds: int = 50                # greedy additions (with replacement) of Caruana's selection
    stack_features: str = "logit"           # stackers' inputs: logit (log-odds / log p) | prob
    stack_lr_C: float = 1.0                 # inverse regularisation of the LogisticRegression stacker
    stack_min_positives: int = 20           # multi-label stack_lr: rarer labels keep the members' mean
    lgbm_n_estimators: int = 200            # stack_lgbm: few shallow, strongly regularised trees
    lgbm_learning_rate: float = 0.05        # stack_lgbm's shrinkage
    lgbm_num_leaves: int = 7                # stack_lgbm's leaves per tree
    lgbm_min_child_samples: int = 50        # stack_lgbm's rows per leaf, at least
    lgbm_reg_lambda: float = 5.0            # stack_lgbm's L2 penalty
    thresholds: str = "global"              # multi-label decisions: global | per_label | none (0.5); docs/ensembles.md
    threshold_min_positives: int = 5        # rarer labels keep the global threshold
    n_jobs: int = 1                         # stack_lgbm's threads (more only pays on idle cores)
    seed: int = 42                          # of the stackers and the nested CV's inner splits
    neighbours: float = 0.35                # transductive smoothing (0 = off): each member's row moves this far toward
                                            # its nearest train+test rows' vote, kept per method where nested CV rises
                                            # (foldstack.neighbours; docs/ensembles.md)
    neighbours_k: int = 10                  # nearest rows that vote, in each graph
    neighbours_power: float = 3.0           # a TF-IDF vote weighs similarity ** power: near-duplicates count most
    neighbours_use: str = "best"            # best: each method keeps smoothing only if its nested CV rises | always
    neighbours_embed: float = 0.15          # of that move, this much follows the nearest rows by the sentence
                                            # embeddings of member neighbours_embed_model, the rest TF-IDF's (0: all
                                            # TF-IDF; all TF-IDF too when the blend has no such member)
    neighbours_embed_model: str = "embed_lr"  # an embed_lr member: the embeddings its folds cached make the graph
    neighbours_embed_power: float = 10.0    # embedding cosines crowd near 1: a steeper power lets the nearest lead

    def check(self) -> list[tuple[str, str]]:
        bad = []
        if not set(self.methods) <= set(METHODS) or len(set(self.methods)) != len(self.methods):
            bad.append(("methods", f"must be distinct names from {', '.join(METHODS)}"))
        if self.submit != "best" and self.submit not in self.methods:
            bad.append(("submit", "must be best or one of methods"))
        choices = {"caruana_metric": ("metric", "log_loss"), "stack_features": ("logit", "prob"),
                   "thresholds": ("per_label", "global", "none"), "neighbours_use": ("best", "always")}
        bad += [(k, f"must be one of {', '.join(v)}") for k, v in choices.items() if getattr(self, k) not in v]
        if self.caruana_rounds < 1 or self.lgbm_n_estimators < 1:
            bad.append(("caruana_rounds", "rounds and lgbm_n_estimators must be at least 1"))
        if not 0 <= self.neighbours < 1:
            bad.append(("neighbours", "must be at least 0 (off) and below 1"))
        if self.neighbours_embed < 0 or self.neighbours and self.neighbours_embed > self.neighbours:  # 0: all off
            bad.append(("neighbours_embed", "must be at least 0 and at most neighbours (it is a share of that move): "
                        "lower it with neighbours"))
        if self.neighbours_k < 1:
            bad.append(("neighbours_k", "must be at least 1"))
        for key in ("neighbours_power", "neighbours_embed_power"):
            if getattr(self, key) <= 0:
                bad.append((key, "must be above 0"))
        return bad

    def smoothing(self, members: list[str]) -> dict | None:
        """What scores.json records and predict re-applies for a blend of `members`: None when off; "alpha" is the
        TF-IDF graph's share. The embedding graph ("embed") needs its embed_lr model among the members (predict
        embeds the new texts with it); without it the whole move follows TF-IDF."""
        if not self.neighbours:
            return None
        embed = self.neighbours_embed if self.neighbours_embed_model in members else 0.0
        out = {"alpha": round(self.neighbours - embed, 12), "k": self.neighbours_k, "power": self.neighbours_power}
        if embed:
            out["embed"] = {"alpha": embed, "power": self.neighbours_embed_power, "model": self.neighbours_embed_model}
        return out


def make_blender(method: str, cfg: Ensemble, metric: str, multilabel: bool):
    from . import blenders as b
    if method == "mean":
        return b.MeanBlend(multilabel)
    if method == "weighted":
        return b.WeightedBlend(multilabel)
    if method == "caruana":
        return b.CaruanaBlend(multilabel, metric if cfg.caruana_metric == "metric" else "log_loss", cfg.caruana_rounds)
    if method == "stack_lr":
        return b.StackLR(multilabel, cfg.stack_features, cfg.stack_lr_C, cfg.stack_min_positives)
    return b.StackLGBM(multilabel, cfg.stack_features, cfg.lgbm_n_estimators, cfg.lgbm_learning_rate,
                       cfg.lgbm_num_leaves, cfg.lgbm_min_child_samples, cfg.lgbm_reg_lambda, cfg.n_jobs, cfg.seed)


@dataclass
class Members:
    names: list[str]
    oof: np.ndarray       # [n_train, M, C]
    test: np.ndarray      # [n_test, M, C]
    y: np.ndarray         # class indices [n_train] or 0/1 [n_train, C]
    fold_of: np.ndarray   # [n_train]
    classes: list[str]
    multilabel: bool
    smoothed: Members | None = None  # the same members smoothed over their neighbours (ensemble.yaml neighbours)
    smoothing: dict | None = None    # how (Ensemble.smoothing), on the smoothed Members


def select(manifests: list[str], cfg: Ensemble) -> list[tuple[str, Path]]:
    """(name, manifest) of the members: those named in ensemble.yaml, or all given; one-line error when one is
    missing."""
    from .io import InputError, member_name
    by_name = {member_name(Path(p).parent): Path(p) for p in manifests}
    names = list(cfg.members) if cfg.members else sorted(by_name)
    if not names:
        raise InputError("no ensemble members: add models/<name>.yaml and run `make folds`")
    for name in names:
        if name not in by_name or not by_name[name].exists():
            raise InputError(f"member {name}: folds/{name}/manifest.json not found (models/{name}.yaml trained?)")
    return [(n, by_name[n]) for n in names]


def check_member(name: str, man: dict, oof_shape, test_shape, val_idx: list, ref: dict) -> None:
    """One member against the workspace (classes.json, folds.csv, test.parquet); InputError names the member."""
    from .io import InputError
    C = len(ref["classes"])
    if man["classes"] != ref["classes"]:
        raise InputError(f"member {name}: classes {man['classes'][:4]}... differ from classes.json's "
                         f"{ref['classes'][:4]}...")
    if man["n_train"] != ref["n_train"] or tuple(oof_shape) != (ref["n_train"], C):
        raise InputError(f"member {name}: oof.npy has shape {tuple(oof_shape)}, expected ({ref['n_train']}, {C})")
    if man["n_test"] != ref["n_test"] or tuple(test_shape) != (ref["n_test"], C):
        raise InputError(f"member {name}: test.npy has shape {tuple(test_shape)}, expected ({ref['n_test']}, {C})")
    fold_of = ref["fold_of"]
    if len(val_idx) != fold_of.max() + 1:
        raise InputError(f"member {name}: {len(val_idx)} folds, folds/folds.csv has {fold_of.max() + 1}")
    for k, rows in enumerate(val_idx):
        if not np.array_equal(np.sort(rows), np.flatnonzero(fold_of == k)):
            raise InputError(f"member {name}: fold {k} held out other rows than folds/folds.csv's fold {k} "
                             f"(trained on older folds? delete folds/{name} and re-run make folds)")


def load_members(manifests: list[str], cfg: Ensemble, processed: Path, folds_csv: Path,
                 graphs: dict | None = None) -> Members:
    """Every member's OOF and test arrays, checked against the workspace; when ensemble.yaml smooths over
    neighbours, also smoothed over the graphs of foldstack.neighbours (`graphs`: "tfidf" / "embed" -> file,
    default features/neighbours_k<k>[_<model>].npz), as Members.smoothed."""
    from functools import partial

    import pandas as pd

    from .folds import read_fold_ids
    from .labels import classes_json, targets
    info = classes_json(processed)
    train = pd.read_parquet(processed / "train.parquet", columns=["id", "labels" if info["task"] == "multilabel"
                                                                   else "label"])
    n_test = len(pd.read_parquet(processed / "test.parquet", columns=["id"]))
    ref = {"classes": info["classes"], "n_train": len(train), "n_test": n_test,
           "fold_of": read_fold_ids(folds_csv, train["id"])}
    multilabel = info["task"] == "multilabel"
    y = targets(train, len(info["classes"]), multilabel)
    chosen = select(manifests, cfg)
    smoothing = cfg.smoothing([name for name, _ in chosen])
    smooth = neighbour_smoother(smoothing, graphs or {}, y, ref, processed, dict(chosen)) if smoothing else None
    names, oofs, tests, smoothed = [], [], [], []
    for name, path in chosen:
        man = json.loads(path.read_text())
        oof, test = np.load(path.parent / "oof.npy", mmap_mode="r"), np.load(path.parent / "test.npy", mmap_mode="r")
        val_idx, fold_tests = [], []
        for k in range(len(man["fold_scores"])):
            with np.load(path.parent / f"fold{k}.npz") as part:
                val_idx.append(part["val_idx"])
                fold_tests.append(part["test"].astype(np.float64) if smooth else None)
        check_member(name, man, oof.shape, test.shape, val_idx, ref)
        oof, test = np.asarray(oof, dtype=np.float64), np.asarray(test, dtype=np.float64)
        names.append(name), oofs.append(oof), tests.append(test)
        if smooth:
            smoothed.append(smooth(oof, fold_tests, test))
    members = partial(Members, names, y=y, fold_of=ref["fold_of"], classes=info["classes"], multilabel=multilabel)
    both = None
    if smooth:
        both = members(np.stack([o for o, _ in smoothed], 1), np.stack([t for _, t in smoothed], 1),
                       smoothing=smoothing)
    return members(np.stack(oofs, 1), np.stack(tests, 1), smoothed=both)


def neighbour_smoother(smoothing: dict, graphs: dict, y: np.ndarray, ref: dict, processed: Path,
                       manifests: dict):
    """(oof, fold_tests, test) -> the member's smoothed (oof, test), over the graphs of foldstack.neighbours
    (`graphs`: "tfidf" / "embed" -> file, default neighbours.graph_path); `manifests`: member -> manifest.json."""
    from . import neighbours as nb
    texts = nb.read_texts(processed / "train.parquet") + nb.read_texts(processed / "test.parquet")
    k, parts = smoothing["k"], []
    if smoothing["alpha"]:
        idx, sim = nb.load(graphs.get("tfidf") or nb.graph_path(k), texts, ref["n_train"], k)
        parts.append(nb.Graph(idx, sim, smoothing["alpha"], k, smoothing["power"]))
    if "embed" in smoothing:
        how = smoothing["embed"]
        path = graphs.get("embed") or nb.graph_path(k, how["model"])
        # an edited embed_lr YAML retrains its folds: its graph must follow (make does; a hand-run fit must too)
        trained_by = json.loads(manifests[how["model"]].read_text())["config_hash"]
        idx, sim = nb.load(path, texts, ref["n_train"], k, trained_by)
        parts.append(nb.Graph(idx, sim, how["alpha"], k, how["power"]))
    labels = nb.one_hot(y, len(ref["classes"]))

    def smooth(oof, fold_tests, test):
        return (nb.smooth_oof(oof, ref["fold_of"], fold_tests, labels, parts),
                nb.smooth_test(test, labels, parts))
    return smooth


def cross_predict(est, P: np.ndarray, y: np.ndarray, fold_of: np.ndarray) -> tuple[np.ndarray, list]:
    """For every fold k: a clone of `est` fitted on the other folds' rows predicts fold k's rows."""
    from sklearn.base import clone
    out, fitted = np.zeros((len(P), P.shape[2])), []
    for k in np.unique(fold_of):
        held = fold_of == k
        fitted.append(clone(est).fit(P[~held], y[~held]))
        out[held] = fitted[-1].predict_proba(P[held])
    return out, fitted


def nested_cv(est, P, y, fold_of, tune=None) -> tuple[np.ndarray, list, dict]:
    """OOF predictions of the blender, its per-fold fits, and (multi-label) each fold's thresholds, tuned on a
    cross-prediction of the other folds only: neither the blender nor the thresholds for fold k saw fold k."""
    oof, fitted = cross_predict(est, P, y, fold_of)
    thresholds = {}
    if tune is not None:
        for k in np.unique(fold_of):
            rest = fold_of != k
            inner, _ = cross_predict(est, P[rest], y[rest], fold_of[rest])
            thresholds[int(k)] = tune(inner, y[rest])
    return oof, fitted, thresholds


def cross_fit(est, data: Members, metric: str, tune) -> dict:
    """The nested CV of one blender on one set of member arrays: OOF, per-fold fits and thresholds, scores."""
    from .blenders import decided_score
    oof, fitted, fold_thr = nested_cv(est, data.oof, data.y, data.fold_of, tune)
    row_thr = np.stack([fold_thr[int(k)] for k in data.fold_of]) if tune else 0.5  # [n, C]: each row's fold's
    fold_scores = [decided_score(metric, data.y[data.fold_of == k], oof[data.fold_of == k], data.multilabel,
                                 fold_thr.get(int(k), 0.5)) for k in np.unique(data.fold_of)]
    return {"oof": oof, "fitted": fitted, "fold_thr": fold_thr, "fold_scores": fold_scores,
            "cv": decided_score(metric, data.y, oof, data.multilabel, row_thr)}


def run_method(method: str, cfg: Ensemble, metric: str, data: Members, out: Path) -> dict:
    """Nested CV + final fit of one method; writes ensemble/<method>/ and returns its scores. With neighbour
    smoothing configured, the method is cross-fitted on the plain and on the smoothed members and keeps whichever
    nested CV is better: smoothing lifted 20 Newsgroups and not Reuters (docs/ensembles.md)."""
    from functools import partial

    from sklearn.base import clone

    from .blenders import log_loss, tune_thresholds
    from .io import atomic_path, save_json, save_npy
    start = time.perf_counter()
    est = make_blender(method, cfg, metric, data.multilabel)
    tune = partial(tune_thresholds, metric=metric, mode=cfg.thresholds, min_positives=cfg.threshold_min_positives) \
        if data.multilabel and cfg.thresholds != "none" and metric != "log_loss" else None
    if tune and len(np.unique(data.fold_of)) < 3:  # the inner cross-prediction needs two folds besides fold k
        print(f"ensemble {method}: thresholds stay 0.5 (tuning them honestly needs at least 3 folds)")
        tune = None
    always = data.smoothed is not None and cfg.neighbours_use == "always"
    plain = None if always else cross_fit(est, data, metric, tune)
    fit, cv_by = plain, {} if always else {"off": plain["cv"]}
    if data.smoothed is not None:
        smoothed = cross_fit(est, data.smoothed, metric, tune)
        cv_by["on"] = smoothed["cv"]
        if always or metrics.better(metric, smoothed["cv"], plain["cv"]):
            fit, data = smoothed, data.smoothed
    oof, fitted, fold_thr = fit["oof"], fit["fitted"], fit["fold_thr"]
    final = clone(est).fit(data.oof, data.y)
    test = final.predict_proba(data.test)
    scores = {"method": method, "members": data.names, "classes": data.classes, "metric": metric,
              "cv": fit["cv"], "fold_scores": fit["fold_scores"], "cv_log_loss": log_loss(oof, data.y, data.multilabel),
              "n_train": len(oof), "n_test": len(test), "config_hash": config.config_hash(cfg), "version": __version__,
              "neighbours": data.smoothing if fit is not plain else None, "cv_by_neighbours": cv_by}
    if data.multilabel:
        scores["cv_at_0.5"] = metrics.score(metric, data.y, oof, True)
        scores["thresholds"] = tune(oof, data.y).tolist() if tune else [0.5] * len(data.classes)
        scores["fold_thresholds"] = {k: v.tolist() for k, v in fold_thr.items()}
    if hasattr(final, "weights_"):
        scores["weights"] = dict(zip(data.names, final.weights_.round(4).tolist()))
        scores["fold_weights"] = [f.weights_.round(4).tolist() for f in fitted]
    scores["secs"] = time.perf_counter() - start
    save_npy(out / "oof.npy", oof.astype(np.float32))
    save_npy(out / "test.npy", test.astype(np.float32))
    with atomic_path(out / "blender.pkl") as tmp:
        tmp.write_bytes(pickle.dumps(final))
    save_json(out / "scores.json", scores)  # last: the Make target
    return scores


def build_leaderboard(cfg: Ensemble, manifests: list[str], ens_dir: Path) -> dict:
    """Members' CV (their manifests) and methods' nested CV (their scores.json); picks the method to submit."""
    rows = []
    for name, path in select(manifests, cfg):
        man = json.loads(path.read_text())
        rows.append({"kind": "member", "name": name, "cv": man["cv"], "secs": man["train_secs"],
                     "test_npy": str(path.parent / "test.npy")})
    for method in cfg.methods:
        s = json.loads((ens_dir / method / "scores.json").read_text())
        rows.append({"kind": "method", "name": method, "cv": s["cv"], "secs": s["secs"],
                     "test_npy": str(ens_dir / method / "test.npy"), "thresholds": s.get("thresholds")})
        metric = s["metric"]
    chosen = cfg.submit
    if chosen == "best":  # by nested CV only; a solution file is never read here
        best = None
        for row in rows:
            if row["kind"] == "method" and (best is None or metrics.better(metric, row["cv"], best["cv"])):
                best = row
        chosen = best["name"]
    return {"metric": metric, "rows": rows, "chosen": chosen}


def print_board(board: dict, test: dict | None = None) -> None:
    metric = board["metric"]
    print(f"leaderboard ({metric}; members: out-of-fold CV; methods: nested CV"
          f"{'; test: against the solution file' if test else ''})")
    print(f"  {'':<7} {'name':<16} {'CV':>8} {'test' if test else '':>8} {'time':>9}")
    for row in board["rows"]:
        mark = "  <- submit" if row["kind"] == "method" and row["name"] == board["chosen"] else ""
        t = f"{test[row['name']]:.4f}" if test else ""
        print(f"  {row['kind']:<7} {row['name']:<16} {row['cv']:>8.4f} {t:>8} {row['secs'] / 60:>6.1f} min{mark}")


def write_method_submission(method: str, ens_dir: Path, out: Path, comp, processed: Path) -> None:
    from .submit import write_submission
    scores = json.loads((ens_dir / method / "scores.json").read_text())
    threshold = np.asarray(scores["thresholds"]) if "thresholds" in scores else 0.5
    write_submission(np.load(ens_dir / method / "test.npy"), out, comp, processed, threshold=threshold)
    print(f"submit: {out} ({method}, nested CV {scores['metric']} {scores['cv']:.4f}), checked against "
          f"{comp.sample_submission}")


def holdout_scores(board: dict, comp, processed: Path, solution: str) -> dict:
    """Each row's test score: its test probabilities written in the submission format, scored like `make score`."""
    import pandas as pd

    from .io import read_table
    from .labels import classes_json
    from .score import score_files
    from .submit import to_frame
    classes = classes_json(processed)["classes"]
    ids = pd.read_parquet(processed / "test.parquet", columns=["id"])["id"].to_numpy()
    sample = read_table(comp.sample_submission, ",", [comp.id])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for row in board["rows"]:
            thr = np.asarray(row["thresholds"]) if row.get("thresholds") else 0.5
            path = Path(tmp) / f"{row['name']}.csv"
            to_frame(np.load(row["test_npy"]), ids, classes, comp, sample, thr).to_csv(path, index=False)
            out[row["name"]] = score_files(path, solution, comp, classes)
    return out


@one_line_errors
def main(argv=None) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default="ensemble/ensemble.yaml", help="the ensemble config")
    config.add_path_options(common, "competition", "processed", "folds")
    common.add_argument("--manifests", nargs="*", default=None, help="default: folds/*/manifest.json")
    common.add_argument("--ensemble-dir", default="ensemble", help="where blends go (a round's folder)")
    common.add_argument("--method", default=None, help="fit: the method; submit: a method instead of the chosen")
    common.add_argument("--submissions", default="submissions", help="where submissions go")
    common.add_argument("--solution", default="data/solution.csv", help="score: the test answers")
    common.add_argument("--neighbours", default=None, help="fit: the TF-IDF neighbour graph (foldstack.neighbours), "
                        "read when ensemble.yaml's neighbours > 0; default features/neighbours_k<neighbours_k>.npz")
    common.add_argument("--neighbours-embed", default=None, help="fit: the embedding neighbour graph, read when "
                        "neighbours and neighbours_embed are > 0 and neighbours_embed_model is a member; default "
                        "features/neighbours_k<neighbours_k>_<neighbours_embed_model>.npz")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=config.keys_epilog("ensemble/ensemble.yaml", ("", Ensemble)))
    sub = ap.add_subparsers(dest="command", required=True)
    for name, text in [("fit", "nested CV + final fit of --method"), ("leaderboard", "members' and methods' CV"),
                       ("submit", "write submissions/<chosen or --method>.csv"),
                       ("score", "the leaderboard with test scores against --solution")]:
        sub.add_parser(name, parents=[common], help=text)
    args = ap.parse_args(argv)
    cfg = config.load(Ensemble, args.config)
    run(args, cfg, config.load(config.Competition, args.competition))


def neighbours_note(scores: dict) -> str:
    """The fit line's tail: nested CV with and without neighbour smoothing, and which one the method kept."""
    by = scores["cv_by_neighbours"]
    if "on" not in by:
        return ""
    return "".join(f"  {k} {v:.4f}" for k, v in by.items()) + \
        f"  neighbour smoothing {'on' if scores['neighbours'] else 'off'}"


def run(args, cfg: Ensemble, comp) -> None:
    from .io import InputError, save_json
    processed, ens_dir = Path(args.processed), Path(args.ensemble_dir)
    manifests = args.manifests
    if manifests is None:
        manifests = [str(p) for p in sorted(Path("folds").glob("*/manifest.json"))]
    board_path = ens_dir / "leaderboard.json"
    if (args.command == "score" or args.command == "submit" and not args.method) and not board_path.exists():
        raise InputError(f"{board_path} not found: run `make submit` first")
    if args.command == "fit":
        if args.method not in cfg.methods:
            raise InputError(f"{args.config}: --method={args.method} is not in methods {list(cfg.methods)}")
        graphs = {k: Path(v) for k, v in (("tfidf", args.neighbours), ("embed", args.neighbours_embed)) if v}
        data = load_members(manifests, cfg, processed, Path(args.folds), graphs)
        s = run_method(args.method, cfg, comp.metric, data, ens_dir / args.method)
        print(f"ensemble {args.method}: nested CV {comp.metric} {s['cv']:.4f}  folds "
              + " ".join(f"{v:.4f}" for v in s["fold_scores"]) + f"  ({len(data.names)} members, {s['secs']:.0f}s)"
              + (f"  weights {s['weights']}" if "weights" in s else "")
              + neighbours_note(s))
    elif args.command == "leaderboard":
        board = build_leaderboard(cfg, manifests, ens_dir)
        save_json(ens_dir / "leaderboard.json", board)
        print_board(board)
    elif args.command == "submit":
        method = args.method or json.loads(board_path.read_text())["chosen"]
        write_method_submission(method, ens_dir, Path(args.submissions) / f"{method}.csv", comp, processed)
    else:  # score
        board = json.loads(board_path.read_text())
        print_board(board, holdout_scores(board, comp, processed, args.solution))
        from .labels import classes_json
        from .score import score_files
        sub = Path(args.submissions) / f"{board['chosen']}.csv"
        classes = classes_json(processed)["classes"]
        print(f"score: {sub}  test {comp.metric} {score_files(sub, args.solution, comp, classes):.4f}")


if __name__ == "__main__":
    main()
