"""The report's figures: each function draws one PNG from arrays already loaded and returns its file name.

matplotlib with the Agg backend (files only, no display). Every figure is closed after saving, so a report over many
members does not hold them all in memory.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

DPI = 90


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name


def fold_scores(members: dict, metric: str, test: dict, out: Path) -> str:
    """Per member: each fold's score (dots), the CV (bar) and, with a solution, the test score (diamond)."""
    names = list(members)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(names)), 3.6))
    for i, name in enumerate(names):
        man = members[name]
        ax.bar(i, man["cv"], color="#cfd8e3", width=0.6, label="CV" if i == 0 else None)
        ax.scatter(np.full(len(man["fold_scores"]), i), man["fold_scores"], color="#2b6cb0", s=18, zorder=3,
                   label="folds" if i == 0 else None)
        if name in test:
            ax.scatter(i, test[name], marker="D", color="#c53030", s=40, zorder=4, label="test" if i == 0 else None)
    values = [s for m in members.values() for s in m["fold_scores"]] + list(test.values())
    ax.set_ylim(max(0.0, min(values) - 0.03), min(1.0, max(values) + 0.02) if metric != "log_loss" else None)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(metric)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out, "fold_scores.png")


def heatmap(matrix: np.ndarray, labels: list[str], title: str, out: Path, name: str, fmt: str = "{:.2f}",
            vmin: float = 0.0, vmax: float = 1.0, xlabels: list[str] | None = None) -> str:
    """A square (or labelled) matrix as a heatmap; values written in the cells when there are few."""
    n = max(len(labels), 1)
    size = min(11, 2.5 + 0.35 * n)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(matrix, cmap="Blues", vmin=vmin, vmax=vmax)
    xl = xlabels or labels
    small = 7 if n > 12 else 9
    ax.set_xticks(range(len(xl)), xl, rotation=60, ha="right", fontsize=small)
    ax.set_yticks(range(len(labels)), labels, fontsize=small)
    if n <= 15:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=small,
                    color="white" if v > (vmin + vmax) / 2 else "black")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, out, name)


def reliability(curves: dict, out: Path) -> str:
    """Reliability diagram: per member, mean predicted probability vs observed frequency per bin (with its ECE)."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    for name, (conf, freq, ece) in curves.items():
        ax.plot(conf, freq, marker="o", ms=3, label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.legend(fontsize=7)
    return _save(fig, out, "reliability.png")


def training_curves(logs: dict, metric: str, out: Path) -> str | None:
    """Per transformer member and fold: training loss and validation metric per epoch."""
    logs = {m: folds for m, folds in logs.items() if any("train_loss" in r for rows in folds for r in rows)}
    if not logs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for (name, folds), color in zip(logs.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for k, rows in enumerate(folds):
            epochs = [r["epoch"] for r in rows]
            axes[0].plot(epochs, [r["train_loss"] for r in rows], marker="o", color=color, alpha=0.7,
                         label=name if k == 0 else None)
            axes[1].plot(epochs, [r[metric] for r in rows], marker="o", color=color, alpha=0.7)
    axes[0].set(xlabel="epoch", ylabel="training loss")
    axes[1].set(xlabel="epoch", ylabel=f"validation {metric}")
    axes[0].legend(fontsize=7)
    return _save(fig, out, "training_curves.png")


def class_shift(classes: list[str], train_share: np.ndarray, test_share: np.ndarray, out: Path) -> str:
    """Class shares: training labels vs the chosen blend's test predictions."""
    order = np.argsort(-train_share)[:40]
    fig, ax = plt.subplots(figsize=(max(5, 0.28 * len(order) + 2), 3.4))
    x = np.arange(len(order))
    ax.bar(x - 0.2, train_share[order], 0.4, label="train labels")
    ax.bar(x + 0.2, test_share[order], 0.4, label="test predictions")
    ax.set_xticks(x, [classes[j] for j in order], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")
    ax.legend(fontsize=8)
    return _save(fig, out, "class_shift.png")


def label_f1(freq: np.ndarray, f1: np.ndarray, classes: list[str], out: Path) -> str:
    """Multi-label: per-label F1 against the label's training frequency (log scale)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.scatter(freq, f1, s=14)
    for j in np.argsort(-freq)[:8]:
        ax.annotate(classes[j], (freq[j], f1[j]), fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="training rows with the label", ylabel="OOF F1", ylim=(-0.02, 1.02))
    return _save(fig, out, "label_f1.png")


def threshold_curve(thresholds: np.ndarray, scores: np.ndarray, chosen: float, metric: str, out: Path) -> str:
    """Multi-label: the chosen blend's OOF metric for one global threshold, and the threshold it uses."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(thresholds, scores)
    ax.axvline(chosen, color="#c53030", ls="--", lw=1, label=f"used: {chosen:.2f}")
    ax.set(xlabel="decision threshold", ylabel=f"OOF {metric}")
    ax.legend(fontsize=8)
    return _save(fig, out, "threshold_curve.png")


def pseudo_rounds(rounds: list[dict], metric: str, out: Path) -> str | None:
    """Pseudo-label rounds: rows added per student fold, their confidence, the blend's nested CV (and test)."""
    if len(rounds) < 2:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for r in rounds[1:]:
        folds = sorted(r["rows_per_fold"])
        axes[0].plot(folds, [r["rows_per_fold"][k] for k in folds], marker="o", label=f"round {r['round']}")
        axes[1].hist(r["confidence"], bins=20, alpha=0.5, label=f"round {r['round']}")
    axes[0].set(xlabel="student fold", ylabel="pseudo rows")
    axes[1].set(xlabel="teacher confidence", ylabel="rows")
    xs = [r["round"] for r in rounds]
    axes[2].plot(xs, [r["cv"] for r in rounds], marker="o", label="nested CV")
    if all(r.get("test") is not None for r in rounds):
        axes[2].plot(xs, [r["test"] for r in rounds], marker="D", label="test")
    axes[2].set(xlabel="round", ylabel=metric)
    axes[2].set_xticks(xs)
    for ax in axes:
        ax.legend(fontsize=7)
    return _save(fig, out, "pseudo_rounds.png")
