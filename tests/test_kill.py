"""Kill at any moment (issue 14): SIGKILL every stage at several points, re-run, and the result equals an
uninterrupted run's; no half-written file is ever taken as done.

One campaign per workspace, in pipeline order: each `make` run is killed at the next point (foldstack.errors.
kill_point: `write:<folder>/<file>` = written to its temporary name, not yet renamed; `wrote:<folder>/<file>` =
renamed, the stage's other files not yet written; `train-step#n` = after the n-th optimizer step of a transformer
fold), and the next run resumes from what the killed one left. A final clean run must then produce, byte for byte,
the arrays, pseudo rows and submissions of a workspace built without interruption, and no temporary file may be left
anywhere.
"""
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import FAST, empty_workspace, write_competition

pytestmark = pytest.mark.slow

TRANSFORMER = dict(kind="transformer", head="bilstm", lstm_hidden=16, max_len=32, epochs=2, batch_size=16, lr=1e-3,
                   head_lr=3e-3, amp="off", augment=["eda"])
PREDICT = ["predict", "TEST=data/raw/test.csv", "OUT=submissions/new.csv"]
PSEUDO = ["ROUND=1", "features/pseudo_r1.parquet"]  # round 1's selection; its training is round 0's code
# (make goals, kill point, the file that must not exist at its final name after the kill, or None)
CAMPAIGN = [  # in the order a run reaches them: models alphabetically (tfidf_lr, then tiny with its eda set)
    (["submit"], "write:processed/classes.json", "data/processed/classes.json"),
    (["submit"], "wrote:processed/test.parquet", "data/processed/train.parquet"),
    (["submit"], "write:processed/train.parquet", "data/processed/train.parquet"),
    (["submit"], "write:folds/folds.csv", "folds/folds.csv"),
    (["submit"], "write:tfidf_lr/fold0.joblib", "folds/tfidf_lr/fold0.npz"),
    (["submit"], "wrote:tfidf_lr/test.npy", "folds/tfidf_lr/manifest.json"),
    (["submit"], "write:features/eda.parquet", "features/eda.parquet"),
    (["submit"], "train-step#2", "folds/tiny/fold0.npz"),
    (["submit"], "write:tiny/fold0.safetensors", "folds/tiny/fold0.npz"),
    (["submit"], "train-step#8", "folds/tiny/fold1.npz"),  # 6 steps per epoch: in the second
    (["submit"], "write:tiny/fold1.npz", "folds/tiny/fold1.npz"),
    (["submit"], "write:tiny/oof.npy", "folds/tiny/manifest.json"),
    (["submit"], "write:mean/blender.pkl", "ensemble/mean/scores.json"),
    (["submit"], "write:mean/scores.json", "ensemble/mean/scores.json"),
    (["submit"], "wrote:stack_lr/test.npy", "ensemble/stack_lr/scores.json"),
    (["submit"], "write:stack_lr/scores.json", "ensemble/stack_lr/scores.json"),
    (["submit"], "write:ensemble/leaderboard.json", "ensemble/leaderboard.json"),
    (["submit"], "write:submissions/stack_lr.csv", "submissions/stack_lr.csv"),
    (PSEUDO, "write:features/pseudo_r1.parquet", "features/pseudo_r1.parquet"),
    (PREDICT, "write:submissions/new.csv", "submissions/new.csv"),
]
GOALS = [["submit"], PSEUDO, PREDICT]


def make(ws: Path, goals: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FOLDSTACK_KILL_LOG": str(ws / "kills.log")}
    env.pop("FOLDSTACK_KILL_AT", None)
    if kill_at:
        env["FOLDSTACK_KILL_AT"] = kill_at
    return subprocess.run(["make", "--no-print-directory", "-C", str(ws), *goals], env=env, capture_output=True,
                          text=True)


def new_workspace(root: Path, tiny_bert: Path) -> Path:
    ws = root / "ws"
    empty_workspace(ws)
    write_competition(ws, n_train=90, n_test=30, n_folds=2)
    (ws / "models" / "tfidf_lr.yaml").write_text(yaml.safe_dump({"kind": "tfidf_lr", "params": FAST["tfidf_lr"]}))
    (ws / "models" / "tiny.yaml").write_text(yaml.safe_dump({**TRANSFORMER, "backbone": str(tiny_bert)}))
    (ws / "ensemble" / "ensemble.yaml").write_text(yaml.safe_dump({"methods": ["mean", "stack_lr"],
                                                                    "submit": "stack_lr"}))
    (ws / "features" / "pseudo.yaml").write_text(yaml.safe_dump({"threshold": 0.34, "agreement": False}))
    return ws


def results(ws: Path) -> dict:
    """What a run produces that must not depend on interruptions: arrays, pseudo rows, submissions."""
    out = {}
    for p in sorted(ws.rglob("*")):
        rel = str(p.relative_to(ws))
        if p.suffix == ".npy":
            out[rel] = np.load(p)
        elif p.suffix == ".npz" and "fold" in p.name:
            out[rel] = {k: v for k, v in np.load(p).items()}
        elif p.suffix == ".csv" and (rel.startswith("submissions/") or rel == "folds/folds.csv"):
            out[rel] = p.read_text()
        elif p.suffix == ".parquet" and not rel.startswith(".stamps"):
            out[rel] = pd.read_parquet(p)
    return out


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        elif isinstance(value, dict):
            for k in value:
                np.testing.assert_array_equal(got[key][k], value[k], err_msg=f"{key}:{k}")
        elif isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(got[key], value, obj=key)
        else:
            assert got[key] == value, key


def test_kill_campaign(tmp_path, tiny_bert):
    reference = new_workspace(tmp_path / "reference", tiny_bert)
    for goals in GOALS:
        done = make(reference, goals)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ws = new_workspace(tmp_path / "killed", tiny_bert)
    for goals, point, not_done in CAMPAIGN:
        killed = make(ws, goals, point)
        hits = (ws / "kills.log").read_text().splitlines() if (ws / "kills.log").exists() else []
        assert killed.returncode != 0 and hits and hits[-1].startswith(point + " "), \
            f"{point} was not reached: {killed.stdout[-1500:]}{killed.stderr[-1500:]}"
        if not_done:
            assert not (ws / not_done).exists(), f"{not_done} exists after a kill at {point}"
    for goals in GOALS:
        done = make(ws, goals)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert len((ws / "kills.log").read_text().splitlines()) == len(CAMPAIGN)
    assert_same(results(ws), results(reference))
    leftovers = [str(p) for p in ws.rglob(".*.tmp*")]
    assert not leftovers, leftovers
