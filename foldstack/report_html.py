"""The report stage's HTML page (foldstack.report --html-dir): figures from foldstack.report_plots, tables, and the
page from the Jinja2 template foldstack/templates/report.html (autoescaped: a text holding `<script>` stays text).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics
from . import report_plots as plots
from .labels import classes_json, targets
from .io import InputError, atomic_path, member_name
from .text import FIELD_SEP

N_MISTAKES = 15


def load_members(manifests: list[str]) -> dict:
    """name -> manifest + oof + test arrays + per-fold epoch logs."""
    out = {}
    for path in manifests:
        folder = Path(path).parent
        man = json.loads(Path(path).read_text())
        logs = []
        for k in range(len(man["fold_scores"])):
            log = folder / f"fold{k}.log"
            logs.append([json.loads(line) for line in log.read_text().splitlines() if line.strip()]
                        if log.exists() else [])
        out[member_name(folder)] = {"man": man, "oof": np.load(folder / "oof.npy"),
                                    "test": np.load(folder / "test.npy"), "logs": logs, "cv": man["cv"],
                                    "fold_scores": man["fold_scores"]}
    return out


def reliability_curve(probs: np.ndarray, y: np.ndarray, multilabel: bool, bins: int = 10):
    """(mean confidence per bin, observed frequency per bin, expected calibration error). Single-label: the top
    class's probability vs whether it is right; multi-label: every (row, label) probability vs the label."""
    if multilabel:
        conf, hit = probs.ravel(), y.ravel()
    else:
        conf, hit = probs.max(1), (probs.argmax(1) == y).astype(float)
    edges = np.minimum((conf * bins).astype(int), bins - 1)
    xs, ys, ece = [], [], 0.0
    for b in range(bins):
        sel = edges == b
        if sel.any():
            xs.append(conf[sel].mean())
            ys.append(hit[sel].mean())
            ece += sel.mean() * abs(xs[-1] - ys[-1])
    return np.array(xs), np.array(ys), float(ece)


def agreement(oofs: dict, y: np.ndarray, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(correlation of the members' probabilities of the true class (multi-label: of every label),
    error overlap: rows both get wrong / rows either gets wrong). Low values: members a blend can combine."""
    names = list(oofs)
    if multilabel:
        signal = {m: p.ravel() for m, p in oofs.items()}
        wrong = {m: (metrics.decide(p, True) != y).any(1) for m, p in oofs.items()}
    else:
        signal = {m: p[np.arange(len(y)), y] for m, p in oofs.items()}
        wrong = {m: p.argmax(1) != y for m, p in oofs.items()}
    corr = np.corrcoef(np.stack([signal[m] for m in names])) if len(names) > 1 else np.ones((1, 1))
    overlap = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            either = (wrong[a] | wrong[b]).sum()
            overlap[i, j] = (wrong[a] & wrong[b]).sum() / either if either else 0.0
    return np.nan_to_num(corr), overlap


def normalized_confusion(y: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Rows: true class, each summing to 1 (a class with no rows stays 0)."""
    from sklearn.metrics import confusion_matrix
    cm = confusion_matrix(y, pred, labels=np.arange(n)).astype(float)
    return cm / np.clip(cm.sum(1, keepdims=True), 1, None)


def mistakes(blend: np.ndarray, y: np.ndarray, texts: pd.Series, ids: pd.Series, classes: list[str],
             members: dict, multilabel: bool, thr=0.5) -> list[dict]:
    """The chosen blend's most confident OOF mistakes, with each member's vote."""
    def names(row: np.ndarray) -> str:
        return " ".join(classes[j] for j in np.flatnonzero(row)) or "(none)"
    if multilabel:
        pred = metrics.decide(blend, True, thr)
        wrong = np.flatnonzero((pred != y).any(1))
        cost = np.abs(blend - y).max(1)
        show = lambda i: names(pred[i]), lambda i: names(y[i])  # noqa: E731
        vote = lambda p, i: names(metrics.decide(p[i:i + 1], True)[0])  # noqa: E731
    else:
        pred = blend.argmax(1)
        wrong = np.flatnonzero(pred != y)
        cost = blend.max(1)
        show = lambda i: classes[pred[i]], lambda i: classes[y[i]]  # noqa: E731
        vote = lambda p, i: classes[p[i].argmax()]  # noqa: E731
    worst = wrong[np.argsort(-cost[wrong], kind="stable")][:N_MISTAKES]
    return [{"id": ids.iloc[i], "p": float(cost[i]), "predicted": show[0](i), "true": show[1](i),
             "votes": {m: vote(d["oof"], i) for m, d in members.items()}, "text": str(texts.iloc[i]).replace(FIELD_SEP, " | ")[:400]}
            for i in worst]


def pseudo_history(args, board_now: dict, test_scores) -> list[dict]:
    """Round 0 and every pseudo round with a leaderboard: the chosen blend's nested CV, rows per fold, confidence."""
    rounds, r = [], 0
    root = Path(args.ensemble_root)
    while True:
        folder = root if r == 0 else root / f"r{r}"
        board_path = folder / "leaderboard.json"
        if not board_path.exists():
            break
        board = json.loads(board_path.read_text())
        chosen = next(row for row in board["rows"] if row["name"] == board["chosen"] and row["kind"] == "method")
        entry = {"round": r, "cv": chosen["cv"], "chosen": board["chosen"], "test": test_scores(board)}
        if r:
            rows_path = Path(args.features) / f"pseudo_r{r}.parquet"
            if not rows_path.exists():
                raise InputError(f"{rows_path} not found although {board_path} exists (make submit ROUND={r})")
            rows = pd.read_parquet(rows_path, columns=["fold", "confidence"])
            entry.update(rows_per_fold=rows["fold"].value_counts().sort_index().to_dict(),
                         confidence=rows["confidence"].to_numpy(), n_rows=len(rows))
        rounds.append(entry)
        r += 1
    return rounds


def leaderboard(args, comp, processed: Path):
    """(board, {name: test score} or {}, a function board -> the chosen row's test score or None)."""
    board_path = Path(args.ensemble_dir) / "leaderboard.json"
    if not board_path.exists():
        raise InputError(f"{board_path} not found: run `make submit` first (make report builds it)")
    board = json.loads(board_path.read_text())
    if not Path(args.solution).exists():
        return board, {}, lambda b: None
    from .ensemble import holdout_scores
    test = holdout_scores(board, comp, processed, args.solution)

    def chosen_test(b: dict) -> float:  # the report's own round is scored once, above
        return (test if b == board else holdout_scores(b, comp, processed, args.solution)).get(b["chosen"])
    return board, test, chosen_test


def figures(ctx: dict, members: dict, blend: dict, y: np.ndarray, out: Path, comp, classes: list[str]) -> dict:
    """Every PNG of the page; returns name -> file."""
    multilabel, metric = comp.multilabel, comp.metric
    figs = {"fold_scores": plots.fold_scores(members, metric, ctx["test"], out)}
    corr, overlap = agreement({m: d["oof"] for m, d in members.items()}, y, multilabel)
    names = list(members)
    what = "every label's probability" if multilabel else "true-class probability"
    figs["correlation"] = plots.heatmap(corr, names, f"OOF correlation ({what})", out, "correlation.png",
                                        vmin=min(0.0, float(corr.min())))
    figs["overlap"] = plots.heatmap(overlap, names, "error overlap: both wrong / either wrong", out, "overlap.png")
    curves = {m: reliability_curve(d["oof"], y, multilabel) for m, d in members.items()}
    curves[f"blend {ctx['chosen']}"] = reliability_curve(blend["oof"], y, multilabel)
    figs["reliability"] = plots.reliability(curves, out)
    figs["curves"] = plots.training_curves({m: d["logs"] for m, d in members.items()}, metric, out)
    train_share = y.mean(0) if multilabel else np.bincount(y, minlength=len(classes)) / len(y)
    test_pred = metrics.decide(blend["test"], multilabel, blend["thr"])
    test_share = test_pred.mean(0) if multilabel else np.bincount(test_pred, minlength=len(classes)) / len(test_pred)
    figs["shift"] = plots.class_shift(classes, train_share, test_share, out)
    if multilabel:
        from sklearn.metrics import f1_score

        from .blenders import decided_score
        f1 = f1_score(y, metrics.decide(blend["oof"], True, blend["thr"]), average=None, zero_division=0)
        figs["label_f1"] = plots.label_f1(y.sum(0), f1, classes, out)
        grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
        scores = [decided_score(metric, y, blend["oof"], True, t) for t in grid]
        figs["threshold"] = plots.threshold_curve(grid, np.array(scores), float(np.mean(blend["thr"])), metric, out)
    else:
        best = max(members, key=lambda m: members[m]["cv"] * (1 if metrics.GREATER_IS_BETTER[metric] else -1))
        figs["confusion_blend"] = plots.heatmap(normalized_confusion(y, blend["oof"].argmax(1), len(classes)),
                                                classes, f"blend {ctx['chosen']}\nOOF confusion (rows: true)", out,
                                                "confusion_blend.png")
        figs["confusion_member"] = plots.heatmap(normalized_confusion(y, members[best]["oof"].argmax(1),
                                                                      len(classes)),
                                                 classes, f"best member {best}\nOOF confusion (rows: true)", out,
                                                 "confusion_member.png")
    figs["pseudo"] = plots.pseudo_rounds(ctx["rounds"], metric, out)
    return {k: v for k, v in figs.items() if v}


def write_report(args, comp) -> Path:
    """Build the page in args.html_dir; returns index.html's path."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    start = time.perf_counter()
    out = Path(args.html_dir)
    out.mkdir(parents=True, exist_ok=True)
    processed = Path(args.processed)
    info = classes_json(processed)
    classes, multilabel = info["classes"], comp.multilabel
    train = pd.read_parquet(processed / "train.parquet")
    y = targets(train, len(classes), multilabel)
    members = load_members(args.manifests)
    board, test, test_of = leaderboard(args, comp, processed)
    chosen = board["chosen"]
    method_dir = Path(args.ensemble_dir) / chosen
    scores = json.loads((method_dir / "scores.json").read_text())
    thr = np.asarray(scores["thresholds"]) if "thresholds" in scores else 0.5
    blend = {"oof": np.load(method_dir / "oof.npy"), "test": np.load(method_dir / "test.npy"), "thr": thr}
    ctx = {"chosen": chosen, "test": test, "rounds": pseudo_history(args, board, test_of)}
    figs = figures(ctx, members, blend, y, out, comp, classes)
    weights = {}
    for row in board["rows"]:
        if row["kind"] == "method":
            s = json.loads((Path(args.ensemble_dir) / row["name"] / "scores.json").read_text())
            if "weights" in s:
                weights[row["name"]] = s["weights"]
    page = {"title": f"foldstack report: {Path(args.competition).resolve().parent.parent.name}",
            "metric": comp.metric, "task": comp.task, "board": board, "test": test, "figs": figs,
            "weights": weights, "member_names": list(members),
            "mistakes": mistakes(blend["oof"], y, train["text"], train["id"], classes, members, multilabel, thr),
            "members": [{"name": m, "cv": d["cv"], "folds": d["fold_scores"],
                         "minutes": d["man"]["train_secs"] / 60,
                         "samples_per_s": _mean([r.get("train_samples_per_s") for rows in d["logs"] for r in rows])}
                        for m, d in members.items()],
            "rounds": [{k: v for k, v in r.items() if k != "confidence"} for r in ctx["rounds"]],
            "n_train": len(train), "n_test": len(blend["test"]), "n_classes": len(classes)}
    env = Environment(loader=PackageLoader("foldstack", "templates"), autoescape=select_autoescape(["html"]))
    page["secs"] = time.perf_counter() - start
    index = out / "index.html"
    with atomic_path(index) as tmp:
        tmp.write_text(env.get_template("report.html").render(**page))
    return index


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
