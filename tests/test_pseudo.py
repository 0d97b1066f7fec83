"""Pseudo-label rounds: the selection rule, leak-freedom (pseudo rows only train their own fold; fold k's teacher is
fold-k models only), soft targets through the trainer's loss, the stop rule, and `make pseudo` end to end with
TF-IDF models (a round, the delta stop, `make submit/score ROUND=1`, resuming an interrupted round)."""
import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from foldstack import config, labels, pseudo
from foldstack import train as train_stage
from foldstack.io import InputError
from foldstack.trainer import loss_fn
from tests.conftest import check_oof_contract, make, workspace, write_competition
from tests.test_ensemble import ensemble_yaml, fake_workspace


def onehot_probs(labels, conf, n_classes=3):
    """Rows putting `conf` on their label and the rest evenly on the other classes."""
    p = np.tile(((1 - np.asarray(conf)) / (n_classes - 1))[:, None], (1, n_classes))
    p[np.arange(len(labels)), labels] = conf
    return p


def test_single_label_selection_threshold_agreement_cap():
    conf = np.array([0.99, 0.95, 0.5, 0.93, 0.97, 0.91])
    teacher = onehot_probs([0, 1, 2, 0, 1, 2], conf)
    members = np.stack([teacher, teacher.copy()])
    members[1, 3] = onehot_probs([2], [0.6])[0]  # a member's top-1 differs on row 3
    cfg = pseudo.Pseudo(threshold=0.9, max_fraction=1.0)
    assert pseudo.select_rows(teacher, members, cfg, False).tolist() == [0, 4, 1, 5], "most confident first"
    loose = pseudo.Pseudo(threshold=0.9, max_fraction=1.0, agreement=False)
    assert pseudo.select_rows(teacher, members, loose, False).tolist() == [0, 4, 1, 3, 5]
    capped = pseudo.Pseudo(threshold=0.9, max_fraction=0.5)  # 3 of 6 test rows at most
    assert pseudo.select_rows(teacher, members, capped, False).tolist() == [0, 4, 1]


def test_multilabel_selection_is_per_label():
    teacher = np.array([[0.95, 0.02, 0.03],   # confident, one label on: kept
                        [0.95, 0.50, 0.03],   # label 1 unsure: dropped
                        [0.95, 0.05, 0.92],   # a member puts label 2 on the other side: dropped
                        [0.02, 0.03, 0.01],   # confidently nothing: no training row has no label, dropped
                        [0.97, 0.96, 0.04]])  # two labels on: kept
    members = np.stack([teacher, teacher.copy()])
    members[1, 2, 2] = 0.4
    cfg = pseudo.Pseudo(threshold=0.9, max_fraction=1.0)
    rows = pseudo.select_rows(teacher, members, cfg, True)
    assert rows.tolist() == [4, 0]  # confidence = the least sure label's: 0.96, 0.95
    assert pseudo.select_rows(teacher, members, pseudo.Pseudo(threshold=0.9, max_fraction=1.0, agreement=False),
                              True).tolist() == [4, 0, 2]
    assert pseudo.select_rows(teacher, members, pseudo.Pseudo(threshold=0.9, max_fraction=0.2), True).tolist() == [4]
    ids = np.array([f"te{i}" for i in range(5)])
    hard = pseudo.fold_rows(ids, 2, teacher, rows, True, soft=False)
    assert hard["labels"].tolist() == [[0, 1], [0]] and (hard["fold"] == 2).all() and "probs" not in hard
    soft = pseudo.fold_rows(ids, 2, teacher, rows, True, soft=True)
    np.testing.assert_allclose(np.stack(soft["probs"]), teacher[rows], rtol=1e-6)
    np.testing.assert_allclose(soft["confidence"], [0.96, 0.95], rtol=1e-6)


def fold_case(n=30, n_test=9, multilabel=False):
    """Processed train/test frames, folds, and pseudo rows: test row j is chosen for student fold j % 3."""
    train = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": [f"orig {i}" for i in range(n)]})
    test = pd.DataFrame({"id": [f"te{j}" for j in range(n_test)], "text": [f"test {j}" for j in range(n_test)]})
    rows = pd.DataFrame({"id": test["id"], "fold": np.arange(n_test) % 3, "confidence": 0.95})
    probs = onehot_probs(np.arange(n_test) % 3, np.full(n_test, 0.9))
    if multilabel:
        train["labels"] = [[i % 3] for i in range(n)]
        rows["labels"] = [[j % 3] for j in range(n_test)]
    else:
        train["label"] = np.arange(n) % 3
        rows["label"] = np.arange(n_test) % 3
    rows["probs"] = list(probs.astype(np.float32))
    train["text_lemma"], test["text_lemma"] = train["text"], test["text"]
    return train, test, np.arange(n) % 3, rows


@pytest.mark.parametrize("kind", ["transformer", "tfidf_lr"])
def test_pseudo_rows_train_only_their_own_fold(captured_fit, kind):
    train, test, fold_of, rows = fold_case()
    captured = captured_fit

    for fold in range(3):
        val_idx, _ = train_stage.run_fold(config.Model(kind=kind), config.Competition(n_folds=3), train, test,
                                          fold_of, fold, 3, None, pseudo=rows)
        assert set(val_idx) == set(np.flatnonzero(fold_of == fold)), "validation: fold k's original rows only"
        assert all(t.startswith("orig") for t in captured["texts"]["val"])
        trained = captured["texts"]["train"]
        assert not {f"orig {i}" for i in val_idx} & set(trained), "a validation row trained"
        assert [t for t in trained if t.startswith("test")] == [f"test {j}" for j in range(fold, 9, 3)]
        y = captured["ys"]["train"]
        if kind == "transformer":  # soft: probability rows, the originals one-hot
            assert y.dtype == np.float32 and y.shape == (len(trained), 3)
            np.testing.assert_allclose(y[-3:], np.stack(rows["probs"][rows["fold"] == fold].tolist()))
            np.testing.assert_array_equal(y[:-3].argmax(1), train["label"][fold_of != fold])
        else:  # classical models fit the hard labels even when the file has probabilities
            assert y.dtype == np.int64 and (y[-3:] == fold).all()


@pytest.mark.parametrize("multilabel", [False, True])
def test_soft_targets_train_a_tiny_transformer(tiny_bert, multilabel, tmp_path):
    train, test, fold_of, rows = fold_case(multilabel=multilabel)
    cfg = config.Model(backbone=str(tiny_bert), head="mean", max_len=16, epochs=1, batch_size=8, amp="off")
    comp = config.Competition(n_folds=3, task="multilabel" if multilabel else "multiclass",
                              metric="micro_f1" if multilabel else "accuracy")
    val_idx, res = train_stage.run_fold(cfg, comp, train, test, fold_of, 0, 3, tmp_path / "f.log", pseudo=rows)
    assert res["val"].shape == (len(val_idx), 3) and res["test"].shape == (9, 3)
    assert np.isfinite(res["history"][0]["train_loss"])


def test_loss_takes_indices_or_probabilities():
    logits = torch.randn(4, 3)
    y = torch.tensor([0, 2, 1, 1])
    onehot = torch.eye(3)[y]
    assert loss_fn(logits, onehot, False).item() == pytest.approx(loss_fn(logits, y, False).item(), rel=1e-5)
    soft = torch.tensor([[0.7, 0.2, 0.1]] * 4)
    assert loss_fn(logits, soft, False).item() > 0 and np.isfinite(loss_fn(logits, soft * 0.9, True).item())


def test_join_targets():
    y = np.array([0, 2])
    np.testing.assert_array_equal(labels.join_targets(y, np.array([1]), 3), [0, 2, 1])
    joined = labels.join_targets(y, np.array([[0.1, 0.8, 0.1]], np.float32), 3)
    np.testing.assert_allclose(joined, [[1, 0, 0], [0, 0, 1], [0.1, 0.8, 0.1]])


def test_pseudo_accuracy_against_the_solution():
    ids = pd.Series(["te0", "te1", "te2"])
    rows = pd.DataFrame({"id": ["te2", "te0"], "labels": [[0, 2], [1]], "label": [2, 0]})
    y = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 1]])
    assert pseudo.pseudo_accuracy(rows, ids, y, True) == 1.0
    assert pseudo.pseudo_accuracy(rows, ids, np.array([1, 1, 2]), False) == 0.5
    assert np.isnan(pseudo.pseudo_accuracy(rows.head(0), ids, y, True))


def test_next_round_stops_when_the_gain_is_below_min_delta():
    cfg = pseudo.Pseudo(min_delta=0.005, max_rounds=3)
    assert pseudo.next_round([0.80], "accuracy", cfg)[0], "round 1 always runs"
    assert pseudo.next_round([0.80, 0.81], "accuracy", cfg)[0]
    go, why = pseudo.next_round([0.80, 0.802], "accuracy", cfg)
    assert not go and "+0.0020 < min_delta 0.005" in why
    assert pseudo.next_round([0.50, 0.45], "log_loss", cfg)[0], "lower log-loss is better"
    assert not pseudo.next_round([0.50, 0.55], "log_loss", cfg)[0]
    assert not pseudo.next_round([0.8, 0.9, 0.95, 0.99], "accuracy", cfg)[0], "max_rounds"
    assert not pseudo.next_round([0.8], "accuracy", pseudo.Pseudo(max_rounds=0))[0]
    assert pseudo.best_round([0.8, 0.82, 0.81], "accuracy") == 1 and pseudo.best_round([0.5, 0.4], "log_loss") == 1


def test_bad_config_and_bad_rows_stop_with_one_line(tmp_path):
    path = tmp_path / "pseudo.yaml"
    path.write_text("treshold: 0.9\n")
    with pytest.raises(SystemExit) as exc:
        pseudo.main(["next-round", f"--config={path}"])
    assert str(exc.value.code).startswith(f"error: {path}: unknown key 'treshold'")
    path.write_text("teacher: oracle\n")
    with pytest.raises(config.ConfigError, match="key 'teacher' must be one of per_fold, ensemble"):
        config.load(pseudo.Pseudo, path)
    rows = pd.DataFrame({"id": ["te0", "tr5"], "fold": [0, 1], "label": [1, 2]})
    rows.to_parquet(tmp_path / "p.parquet")
    with pytest.raises(InputError, match=r"p.parquet: row 1, column 'id': 'tr5' is not a test id"):
        labels.read_pseudo(tmp_path / "p.parquet", pd.Series(["te0", "te1"]), 3, False)
    rows.assign(id="te0", label=[1, 3]).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(InputError, match=r"row 1, column 'label': 3 is not a class index"):
        labels.read_pseudo(tmp_path / "p.parquet", pd.Series(["te0", "te1"]), 3, False)


def signed_round(ws, n_test=20, k=3):
    """A finished round 0 whose fold-k models all predict class k for every test row, with confidence rising with
    the row (0.80 ... 0.99): a pseudo row's label then tells which fold's models labelled it."""
    conf = 0.80 + 0.01 * np.arange(n_test)
    for member in ("good", "weak"):
        for f in range(k):
            part = dict(np.load(ws / "folds" / member / f"fold{f}.npz"))
            np.savez(ws / "folds" / member / f"fold{f}.npz", **part, test=onehot_probs(np.full(n_test, f), conf))
    return conf


def test_per_fold_teacher_labels_fold_k_from_fold_k_models_only(tmp_path, monkeypatch):
    ws = fake_workspace(tmp_path)
    monkeypatch.chdir(ws)
    signed_round(ws)
    (ws / "features").mkdir()
    (ws / "features" / "pseudo.yaml").write_text(yaml.safe_dump({"threshold": 0.85, "max_fraction": 0.5}))
    # neighbour smoothing on, and no graph here: the teachers read the members' own probabilities, never smoothed
    ensemble_yaml(ws, methods=["mean"], neighbours=0.35)
    args = ["select", "--manifests", "folds/good/manifest.json", "folds/weak/manifest.json"]
    pseudo.main([*args, "--out=features/pseudo_r1.parquet"])
    ensemble_yaml(ws, methods=["mean"])
    df = pd.read_parquet("features/pseudo_r1.parquet")
    assert sorted(df.columns) == ["confidence", "fold", "id", "label"]
    for k in range(3):
        rows = df[df["fold"] == k]
        assert (rows["label"] == k).all(), f"fold {k}'s rows were labelled by other folds' models"
        assert rows["id"].tolist() == [f"te{i}" for i in range(19, 9, -1)], "threshold 0.85, cap 10, best first"
    # teacher: ensemble labels every fold alike, from the blend fitted on all OOF rows (not the default)
    from foldstack import ensemble
    ensemble.main(["fit", "--method=mean"])
    ensemble.main(["leaderboard"])
    (ws / "features" / "pseudo.yaml").write_text(yaml.safe_dump({"teacher": "ensemble", "threshold": 0.3,
                                                                 "labels": "soft"}))
    pseudo.main([*args, "--out=features/pseudo_r1.parquet"])
    df = pd.read_parquet("features/pseudo_r1.parquet")
    per_fold = [df[df["fold"] == k].drop(columns="fold").reset_index(drop=True) for k in range(3)]
    assert len(per_fold[0]) and all(per_fold[0][["id", "label"]].equals(p[["id", "label"]]) for p in per_fold)
    assert "probs" in df and len(df["probs"].iloc[0]) == 3


FAST = {"tfidf_lr": {"n_jobs": 1, "max_features": 5000},
        "tfidf_lgbm": {"n_jobs": 1, "svd_components": 16, "n_estimators": 40, "min_child_samples": 5}}


def make_pseudo(ws) -> str:
    """`make pseudo`: stdout and stderr (where next-round says why the rounds go on or stop)."""
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ws), "pseudo"], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def pseudo_ws(tmp_path_factory):
    """A TF-IDF workspace after `make pseudo` with a min_delta no round can reach: round 1 runs, then it stops."""
    ws = workspace(tmp_path_factory.mktemp("pseudo"), {}, {})
    write_competition(ws, n_train=150, n_test=40)
    for kind, params in FAST.items():
        (ws / "models" / f"{kind}.yaml").write_text(yaml.safe_dump({"kind": kind, "params": params}))
    (ws / "features" / "pseudo.yaml").write_text(yaml.safe_dump(
        {"threshold": 0.5, "max_fraction": 0.5, "min_delta": 0.5, "max_rounds": 3}))
    return ws, make_pseudo(ws)


@pytest.mark.slow
def test_make_pseudo_runs_a_round_and_stops_by_the_delta_rule(pseudo_ws):
    ws, out = pseudo_ws
    assert "pseudo: nested CV accuracy per round: r0 " in out and "round 1 changed the nested CV by" in out
    assert "< min_delta 0.5: stop; best round" in out and "next round 1" in out
    assert (ws / "ensemble" / "r1" / "leaderboard.json").exists() and not (ws / "ensemble" / "r2").exists()
    assert not any((ws / "folds").glob("*/r2"))
    df = pd.read_parquet(ws / "features" / "pseudo_r1.parquet")
    assert len(df) and set(df["fold"]) <= {0, 1, 2} and df.groupby("fold").size().max() <= 20
    board = json.loads((ws / "ensemble" / "r1" / "leaderboard.json").read_text())
    assert {r["name"]: r["test_npy"] for r in board["rows"] if r["kind"] == "member"} == {
        m: f"folds/{m}/r1/test.npy" for m in FAST}, "every member of round 1 in its blend, under its own name"
    for model in FAST:  # round 1 keeps the OOF contract: original rows only, each exactly once
        check_oof_contract(ws, f"{model}/r1", 150, 40, 3)
        for k in range(3):
            summary = json.loads((ws / "folds" / model / "r1" / f"fold{k}.json").read_text())
            assert summary["n_pseudo"] == (df["fold"] == k).sum()
    assert "score: submissions/r1/mean.csv  test accuracy" in make(ws, "score", "ROUND=1")
    assert "score: submissions/mean.csv  test accuracy" in make(ws, "score")
    board = make(ws, "pseudo-score")
    assert "round 0:" in board and "round 1:" in board and "accuracy" in board


@pytest.mark.slow
def test_round_one_teachers_are_fold_k_models_that_never_saw_fold_k(pseudo_ws):
    ws, _ = pseudo_ws
    df = pd.read_parquet(ws / "features" / "pseudo_r1.parquet")
    folds = pd.read_csv(ws / "folds" / "folds.csv")
    test_ids = pd.read_parquet(ws / "data" / "processed" / "test.parquet")["id"].astype(str)
    for k in range(3):
        parts = [np.load(ws / "folds" / m / f"fold{k}.npz") for m in FAST]
        for part in parts:  # the teacher held out exactly fold k: its training side never held a fold-k row
            assert set(part["val_idx"]) == set(np.flatnonzero(folds["fold"] == k))
        teacher = np.mean([part["test"] for part in parts], axis=0)  # fold k's teacher from fold-k files alone
        rows = df[df["fold"] == k]
        pos = pd.Index(test_ids).get_indexer(rows["id"])
        np.testing.assert_array_equal(rows["label"], teacher[pos].argmax(1))
        np.testing.assert_allclose(rows["confidence"], teacher[pos].max(1), rtol=1e-5)


@pytest.mark.slow
def test_an_interrupted_round_resumes_at_its_unfinished_fold(pseudo_ws):
    ws, _ = pseudo_ws
    (ws / "folds" / "tfidf_lr" / "r1" / "fold1.npz").unlink()  # as if round 1 died in fold 1
    plan = make(ws, "submit", "ROUND=1", dry=True)
    assert plan.count("foldstack.train") == 1 and "foldstack.pseudo select" not in plan
    assert "--fold=1 --out-dir=folds/tfidf_lr/r1" in plan and "--pseudo=features/pseudo_r1.parquet" in plan
    assert "foldstack.train" not in make(ws, "submit", dry=True), "round 0 is untouched"
    out = make_pseudo(ws)
    assert out.count("foldstack.train") == 1 and "--model=models/tfidf_lr.yaml --fold=1" in out
    assert "foldstack.train" not in make(ws, "submit", "ROUND=1", dry=True)


@pytest.mark.slow
def test_a_model_left_out_of_retrain_keeps_its_round_zero_folds_in_every_round(tmp_path):
    """pseudo.yaml `retrain: [tfidf_lr]`: round 1 retrains tfidf_lr only; tfidf_lgbm's round-0 folds teach, blend and
    predict in round 1 as they are, and `make predict ROUND=1` finds them."""
    ws = workspace(tmp_path, {}, {})
    write_competition(ws, n_train=150, n_test=40)
    for kind, params in FAST.items():
        (ws / "models" / f"{kind}.yaml").write_text(yaml.safe_dump({"kind": kind, "params": params}))
    (ws / "features" / "pseudo.yaml").write_text(yaml.safe_dump(
        {"threshold": 0.5, "max_rounds": 1, "retrain": ["tfidf_lr"]}))
    out = make_pseudo(ws)
    trains = [line for line in out.splitlines() if "foldstack.train " in line]
    assert sum("models/tfidf_lr.yaml" in t for t in trains) == 6, "3 folds in round 0, 3 in round 1"
    assert sum("models/tfidf_lgbm.yaml" in t for t in trains) == 3, "round 0 only"
    assert (ws / "folds" / "tfidf_lr" / "r1" / "manifest.json").exists()
    assert not (ws / "folds" / "tfidf_lgbm" / "r1").exists()
    board = json.loads((ws / "ensemble" / "r1" / "leaderboard.json").read_text())
    assert {r["name"]: r["test_npy"] for r in board["rows"] if r["kind"] == "member"} == {
        "tfidf_lgbm": "folds/tfidf_lgbm/test.npy", "tfidf_lr": "folds/tfidf_lr/r1/test.npy"}
    assert "foldstack.train" not in make(ws, "submit", "ROUND=1", dry=True)
    make(ws, "predict", "TEST=data/raw/test.csv", "OUT=pred_r1.csv", "ROUND=1")
    submitted = pd.read_csv(ws / "submissions" / "r1" / f"{board['chosen']}.csv")
    pd.testing.assert_frame_equal(pd.read_csv(ws / "pred_r1.csv"), submitted)
