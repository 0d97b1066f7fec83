"""The ensemble stage: blenders' estimator API, nested CV that never fits on the held-out fold, the alignment check,
multi-label thresholds, and end to end (multi-label through the CLI; `make submit score` with TF-IDF models)."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.base import clone

from foldstack import blenders, ensemble, metrics
from foldstack.io import InputError
from tests.conftest import make, workspace, write_competition

CLASSES = ["acq", "earn", "grain"]


def member_probs(y, quality, rng, multilabel):
    """Probabilities that lean towards the truth with weight `quality`."""
    n, C = len(y), len(CLASSES)
    if multilabel:
        return np.clip(quality * y + (1 - quality) * rng.random((n, C)), 0.01, 0.99)
    noise = rng.dirichlet(np.ones(C), n)
    return quality * np.eye(C)[y] + (1 - quality) * noise


def fake_data(n=90, quality=(0.6, 0.3, 0.0), multilabel=False, seed=0):
    rng = np.random.default_rng(seed)
    if multilabel:
        y = (rng.random((n, 3)) < 0.4).astype(np.float32)
        y[np.arange(n), rng.integers(0, 3, n)] = 1
    else:
        y = rng.integers(0, 3, n)
    P = np.stack([member_probs(y, q, rng, multilabel) for q in quality], 1)  # [n, M, C]
    return P, y


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("method", ensemble.METHODS)
def test_blenders_follow_the_estimator_api(method, multilabel):
    P, y = fake_data(multilabel=multilabel)
    est = ensemble.make_blender(method, ensemble.Ensemble(lgbm_n_estimators=20, lgbm_min_child_samples=5, n_jobs=1),
                                "micro_f1" if multilabel else "accuracy", multilabel)
    params = est.get_params()
    assert set(vars(est)) == set(params), "__init__ only stores its arguments"
    assert clone(est).get_params() == params
    assert est.fit(P, y) is est
    assert any(k.endswith("_") for k in vars(est)) and set(params) < set(vars(est))
    out = est.predict_proba(P)
    assert out.shape == (90, 3) and (out >= 0).all() and (out <= 1 + 1e-9).all()
    if not multilabel:
        np.testing.assert_allclose(out.sum(1), 1, atol=1e-6)
    if hasattr(est, "weights_"):
        assert (est.weights_ >= 0).all() and est.weights_.sum() == pytest.approx(1)


def test_weighted_vote_prefers_the_better_member():
    P, y = fake_data(n=300)
    blend = blenders.WeightedBlend().fit(P, y)
    assert blend.weights_[0] > 0.5 and blend.weights_[2] < 0.1
    ll = blenders.log_loss(blend.predict_proba(P), y, False)
    assert ll <= min(blenders.log_loss(P[:, m], y, False) for m in range(3)) + 1e-6
    caruana = blenders.CaruanaBlend(metric="log_loss", n_rounds=20).fit(P, y)
    assert caruana.weights_.argmax() == 0 and (caruana.weights_ * 20 % 1 == 0).all(), "picks with replacement"


class RecordingBlend(blenders.MeanBlend):
    """Row ids ride in P[:, 0, 0]; every fit/predict pair is logged, and predictions carry the ids along."""
    log = []

    def fit(self, P, y):
        self.fit_ids_ = set(P[:, 0, 0].astype(int))
        return super().fit(P, y)

    def predict_proba(self, P):
        RecordingBlend.log.append((self.fit_ids_, set(P[:, 0, 0].astype(int))))
        out = np.zeros((len(P), P.shape[2]))
        out[:, 0] = P[:, 0, 0]
        return out


def test_nested_cv_never_fits_on_the_held_out_fold():
    P, y = fake_data(n=60, multilabel=True)
    P[:, 0, 0] = np.arange(60)
    fold_of = np.arange(60) % 4
    RecordingBlend.log = []
    every = set(range(60))

    def tune(probs, y_rest):  # returns the rows it did NOT see, to check which fold they belong to
        return np.array(sorted(every - set(probs[:, 0].astype(int))))
    oof, fitted, thresholds = ensemble.nested_cv(RecordingBlend(True), P, y, fold_of, tune)
    assert len(fitted) == 4 and RecordingBlend.log
    for fit_ids, pred_ids in RecordingBlend.log:
        assert not fit_ids & pred_ids, "a blender predicted a row it was fitted on"
    for k in range(4):
        held = set(np.flatnonzero(fold_of == k))
        assert (every - held, held) in RecordingBlend.log, f"fold {k}: fitted on exactly the other folds"
        assert set(thresholds[k]) == held, f"fold {k}'s thresholds were tuned on rows outside fold {k} only"
    np.testing.assert_array_equal(oof[:, 0], np.arange(60))  # each row predicted once, by its fold's blender


def test_stack_lr_keeps_the_members_mean_for_rare_labels():
    P, y = fake_data(n=200, multilabel=True)
    y[:, 2] = 0
    y[:5, 2] = 1  # 5 positives: below min_positives
    est = blenders.StackLR(multilabel=True, min_positives=10).fit(P, y)
    assert est.models_[2] is None and est.models_[0] is not None
    np.testing.assert_allclose(est.predict_proba(P)[:, 2], P[:, :, 2].mean(1))


def test_thresholds_are_tuned_per_label():
    rng = np.random.default_rng(1)
    n = 400
    y = np.zeros((n, 4))
    y[:, 0] = rng.random(n) < 0.5
    y[:, 1] = rng.random(n) < 0.5
    y[:3, 2] = 1  # label 2: too rare for its own threshold
    y[:, 3] = 1   # label 3: every row's top label (decide() always keeps it)
    p = np.full((n, 4), 0.01)
    p[:, 0] = np.where(y[:, 0] > 0, rng.uniform(0.25, 0.45, n), rng.uniform(0.0, 0.2, n))  # best cut 0.2-0.25
    p[:, 1] = np.where(y[:, 1] > 0, rng.uniform(0.8, 0.95, n), rng.uniform(0.5, 0.75, n))  # best cut 0.75-0.8
    p[:, 3] = 0.99
    thr = blenders.tune_thresholds(p, y, "micro_f1")
    assert 0.2 <= thr[0] <= 0.25 and 0.75 <= thr[1] <= 0.8
    glob = blenders.tune_thresholds(p, y, "micro_f1", mode="global")
    assert thr[2] == glob[2] and len(set(glob)) == 1
    tuned = blenders.decided_score("micro_f1", y, p, True, thr)
    assert tuned > metrics.score("micro_f1", y, p, True) and tuned > blenders.decided_score("micro_f1", y, p, True,
                                                                                            glob)
    assert tuned == pytest.approx(1.0, abs=0.02)
    for metric in ("macro_f1", "accuracy"):
        t = blenders.tune_thresholds(p, y, metric)
        assert blenders.decided_score(metric, y, p, True, t) >= metrics.score(metric, y, p, True)
    assert (blenders.tune_thresholds(p, y, "log_loss") == 0.5).all()


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "micro_f1", "log_loss"])
def test_fast_scores_match_the_metrics_module(metric, multilabel):
    for seed in range(3):
        P, y = fake_data(n=50, quality=(0.2,), multilabel=multilabel, seed=seed)
        assert blenders.decided_score(metric, y, P[:, 0], multilabel) == pytest.approx(
            metrics.score(metric, y, P[:, 0], multilabel), abs=1e-6)


def fake_workspace(ws, multilabel=False, n=90, n_test=20, k=3, members=("good", "weak")):
    """processed data, folds.csv and members' OOF contracts on disk, as prep/folds/gather would leave them."""
    rng = np.random.default_rng(0)
    P, y = fake_data(n + n_test, quality=(0.6, 0.3)[:len(members)], multilabel=multilabel)
    proc = ws / "data" / "processed"
    proc.mkdir(parents=True)
    ids, test_ids = [f"tr{i}" for i in range(n)], [f"te{i}" for i in range(n_test)]
    task, metric = ("multilabel", "micro_f1") if multilabel else ("multiclass", "accuracy")
    (proc / "classes.json").write_text(json.dumps({"task": task, "classes": CLASSES}))
    labels = [list(np.flatnonzero(r)) for r in y[:n]] if multilabel else y[:n]
    pd.DataFrame({"id": ids, "labels" if multilabel else "label": labels}).to_parquet(proc / "train.parquet")
    pd.DataFrame({"id": test_ids}).to_parquet(proc / "test.parquet")
    fold_of = rng.permutation(np.arange(n) % k)
    (ws / "folds").mkdir()
    pd.DataFrame({"id": ids, "fold": fold_of}).to_csv(ws / "folds" / "folds.csv", index=False)
    for m, name in enumerate(members):
        out = ws / "folds" / name
        out.mkdir()
        np.save(out / "oof.npy", P[:n, m].astype(np.float32))
        np.save(out / "test.npy", P[n:, m].astype(np.float32))
        for f in range(k):
            np.savez(out / f"fold{f}.npz", val_idx=np.flatnonzero(fold_of == f))
        cv = metrics.score(metric, y[:n], P[:n, m], multilabel)
        (out / "manifest.json").write_text(json.dumps(
            {"model": name, "classes": CLASSES, "task": task, "metric": metric, "cv": cv, "fold_scores": [cv] * k,
             "n_train": n, "n_test": n_test, "train_secs": 1.0}))
    raw = ws / "data" / "raw"
    raw.mkdir()
    names = [" ".join(CLASSES[j] for j in np.flatnonzero(r)) for r in y[n:]] if multilabel \
        else [CLASSES[j] for j in y[n:]]
    pd.DataFrame({"id": test_ids, "topics": "earn"}).to_csv(raw / "sample_submission.csv", index=False)
    pd.DataFrame({"id": test_ids, "topics": names}).to_csv(ws / "data" / "solution.csv", index=False)
    comp = {"label": "topics", "task": task, "metric": metric, "n_folds": k}
    (ws / "data" / "competition.yaml").write_text(yaml.safe_dump(comp))
    return ws


def test_alignment_check_names_the_member_that_differs(tmp_path, monkeypatch):
    ws = fake_workspace(tmp_path)
    monkeypatch.chdir(ws)
    cfg, proc, folds = ensemble.Ensemble(neighbours=0), ws / "data" / "processed", ws / "folds" / "folds.csv"
    manifests = [str(p) for p in sorted(ws.glob("folds/*/manifest.json"))]
    assert ensemble.load_members(manifests, cfg, proc, folds).oof.shape == (90, 2, 3)
    weak = ws / "folds" / "weak"
    parts = [np.load(weak / f"fold{f}.npz")["val_idx"] for f in range(3)]
    np.savez(weak / "fold0.npz", val_idx=np.sort(np.concatenate([parts[0][1:], parts[1][:1]])))  # other folds
    with pytest.raises(InputError, match=r"^member weak: fold 0 held out other rows than folds/folds.csv's fold 0"):
        ensemble.load_members(manifests, cfg, proc, folds)
    np.savez(weak / "fold0.npz", val_idx=parts[0])
    np.save(weak / "test.npy", np.zeros((19, 3), np.float32))
    with pytest.raises(InputError, match=r"^member weak: test.npy has shape \(19, 3\), expected \(20, 3\)"):
        ensemble.load_members(manifests, cfg, proc, folds)
    man = json.loads((weak / "manifest.json").read_text())
    (weak / "manifest.json").write_text(json.dumps({**man, "classes": ["acq", "earn", "wheat"]}))
    with pytest.raises(SystemExit) as exc:  # the stage's one-line error
        ensemble.main(["fit", "--method=mean", "--config=" + str(ensemble_yaml(ws))])
    assert str(exc.value.code).startswith("error: member weak: classes") and "\n" not in str(exc.value.code)
    with pytest.raises(InputError, match="member other: folds/other/manifest.json not found"):
        ensemble.select(manifests, ensemble.Ensemble(members=("good", "other")))


def ensemble_yaml(ws, **keys):
    path = ws / "ensemble" / "ensemble.yaml"
    path.parent.mkdir(exist_ok=True)
    # neighbours 0: fake_workspace has no texts to build a neighbour graph from (tests/test_neighbours.py has one)
    path.write_text(yaml.safe_dump({"lgbm_n_estimators": 30, "lgbm_min_child_samples": 5, "n_jobs": 1,
                                    "neighbours": 0.0, **keys}))
    return path


def test_multilabel_end_to_end_through_the_cli(tmp_path, monkeypatch, capsys):
    ws = fake_workspace(tmp_path, multilabel=True)
    monkeypatch.chdir(ws)
    ensemble_yaml(ws, thresholds="per_label")
    for method in ensemble.METHODS:
        ensemble.main(["fit", f"--method={method}"])
        s = json.loads((ws / "ensemble" / method / "scores.json").read_text())
        assert len(s["thresholds"]) == 3 and set(s["fold_thresholds"]) == {"0", "1", "2"}
        assert np.load(ws / "ensemble" / method / "oof.npy").shape == (90, 3)
        assert np.load(ws / "ensemble" / method / "test.npy").dtype == np.float32
    ensemble.main(["leaderboard"])
    chosen = json.loads((ws / "ensemble" / "leaderboard.json").read_text())["chosen"]
    ensemble.main(["submit"])
    ensemble.main(["score"])
    out = capsys.readouterr().out
    assert "member  good" in out and "method  stack_lr" in out and "<- submit" in out
    assert f"score: submissions/{chosen}.csv  test micro_f1" in out
    sub = pd.read_csv(ws / "submissions" / f"{chosen}.csv")
    assert list(sub.columns) == ["id", "topics"] and all(set(c.split()) <= set(CLASSES) for c in sub["topics"])
    with pytest.raises(SystemExit, match="unknown key 'method'"):
        ensemble.main(["fit", "--method=mean", "--config=" + str(ensemble_yaml(ws, method="x"))])


@pytest.mark.slow
def test_make_submit_score_with_tfidf_models(tmp_path):
    ws = workspace(tmp_path, {}, {})
    write_competition(ws, n_train=150, n_test=40)
    fast = {"tfidf_lr": {"n_jobs": 1, "max_features": 5000},
            "tfidf_lgbm": {"n_jobs": 1, "svd_components": 16, "n_estimators": 40, "min_child_samples": 5}}
    for kind, params in fast.items():
        (ws / "models" / f"{kind}.yaml").write_text(yaml.safe_dump({"kind": kind, "params": params}))
    ensemble_yaml(ws, methods=["mean", "weighted", "stack_lr", "stack_lgbm"])
    plan = make(ws, "submit", dry=True)
    assert plan.count("foldstack.train") == 6 and "foldstack.ensemble fit --method=stack_lgbm" in plan
    out = make(ws, "submit", "score")
    assert "method  stack_lgbm" in out and "member  tfidf_lr" in out
    chosen = json.loads((ws / "ensemble" / "leaderboard.json").read_text())["chosen"]
    assert f"score: submissions/{chosen}.csv  test accuracy" in out
    sub, sample = pd.read_csv(ws / "submissions" / f"{chosen}.csv"), pd.read_csv(ws / "data/raw/sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and (sub["id"] == sample["id"]).all()
    for method in ("mean", "weighted", "stack_lr", "stack_lgbm"):
        oof = np.load(ws / "ensemble" / method / "oof.npy")
        assert oof.dtype == np.float32 and oof.shape == (150, 3)
    assert "foldstack.ensemble fit" not in make(ws, "submit", dry=True), "nothing to redo"
