"""Transductive neighbour smoothing (foldstack.neighbours, ensemble.yaml `neighbours`): the graph finds near
duplicates, a held-out fold's smoothed rows never see that fold's labels, and the ensemble refuses a stale graph."""
import json

import numpy as np
import pandas as pd
import pytest

from foldstack import ensemble
from foldstack import neighbours as nb
from foldstack.io import InputError
from tests.test_ensemble import ensemble_yaml, fake_workspace


def test_the_graph_finds_near_duplicates_and_never_the_row_itself():
    texts = ["the hockey game went to overtime", "overtime in the hockey game tonight",
             "a new graphics card driver", "the graphics card driver crashes", "hockey", ""]
    idx, sim = nb.build(texts, k=2)
    assert idx.shape == sim.shape == (6, 2) and idx.dtype == np.int32
    assert (idx[0, 0], idx[1, 0], idx[2, 0], idx[3, 0]) == (1, 0, 3, 2)
    assert all(i not in idx[i][sim[i] > 0] for i in range(6)), "a row never votes for itself"
    assert sim[5].max() == 0, "an empty text has no similar row"
    assert (np.diff(sim, axis=1) <= 1e-6).all(), "nearest first"
    idx, sim = nb.build(texts[:2], k=3)  # fewer rows than k: the missing places cast no vote
    assert sim[0, 1:].max() == 0 and idx[0, 0] == 1
    with pytest.raises(InputError, match=r"^no words to build a neighbour graph from .*set neighbours: 0"):
        nb.build(["a", "b", ""], k=2)  # single letters only: TF-IDF has no vocabulary


def random_case(n=60, n_test=20, C=3, k_folds=3, seed=0):
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(np.arange(n) % k_folds)
    oof = rng.dirichlet(np.ones(C), n)
    fold_tests = [rng.dirichlet(np.ones(C), n_test) for _ in range(k_folds)]
    y = rng.integers(0, C, n)
    idx = np.stack([rng.choice(np.delete(np.arange(n + n_test), i), 6, replace=False) for i in range(n + n_test)])
    sim = np.sort(rng.uniform(0.1, 1, idx.shape))[:, ::-1].astype(np.float32)
    return rng, fold_of, oof, fold_tests, y, idx.astype(np.int32), sim


def test_a_held_out_fold_never_sees_its_own_labels():
    rng, fold_of, oof, fold_tests, y, idx, sim = random_case()
    args = dict(idx=idx, sim=sim, alpha=0.5, k=6, power=3.0)
    base = nb.smooth_oof(oof, fold_of, fold_tests, nb.one_hot(y, 3), **args)
    held = fold_of == 0
    flipped = np.where(held, (y + 1) % 3, y)  # fold 0's labels change
    moved = nb.smooth_oof(oof, fold_of, fold_tests, nb.one_hot(flipped, 3), **args)
    np.testing.assert_array_equal(moved[held], base[held])
    assert not np.allclose(moved[~held], base[~held]), "the other folds do vote with fold 0's labels"
    # Nor do other folds' OOF rows or other folds' models' test predictions reach fold 0.
    other_oof = np.where(held[:, None], oof, rng.dirichlet(np.ones(3), len(oof)))
    other_tests = [fold_tests[0]] + [rng.dirichlet(np.ones(3), 20) for _ in range(2)]
    again = nb.smooth_oof(other_oof, fold_of, other_tests, nb.one_hot(y, 3), **args)
    np.testing.assert_array_equal(again[held], base[held])
    np.testing.assert_allclose(base.sum(1), 1.0)
    assert not np.allclose(base, oof)


def test_smoothing_the_folds_mean_equals_the_mean_of_the_smoothed_folds():
    _, _, _, fold_tests, y, idx, sim = random_case()
    labels = nb.one_hot(y, 3)
    each = np.mean([nb.smooth_test(t, labels, idx, sim, 0.4, 5, 2.0) for t in fold_tests], 0)
    np.testing.assert_allclose(nb.smooth_test(np.mean(fold_tests, 0), labels, idx, sim, 0.4, 5, 2.0), each)


def with_graph(ws, n=90, n_test=20, k=3, labels=None):
    """fake_workspace's members given fold test predictions, and a neighbour graph file: random neighbours, or
    given train labels, each train row's neighbours share its label (a graph that must help)."""
    rng = np.random.default_rng(1)
    for member in ("good", "weak"):
        test = np.load(ws / "folds" / member / "test.npy")
        for f in range(k):
            with np.load(ws / "folds" / member / f"fold{f}.npz") as part:
                val_idx = part["val_idx"]
            np.savez(ws / "folds" / member / f"fold{f}.npz", val_idx=val_idx, test=test)
    texts = []
    for part in ("train", "test"):  # fake_workspace's processed tables get the text column the graph is built from
        path = ws / "data" / "processed" / f"{part}.parquet"
        table = pd.read_parquet(path)
        table["text"] = [f"{part} text {i}" for i in range(len(table))]
        table.to_parquet(path)
        texts += table["text"].tolist()
    rows = np.arange(n + n_test)
    pool = [np.flatnonzero(labels == labels[i]) if labels is not None and i < n else rows for i in rows]
    idx = np.stack([rng.choice(np.setdiff1d(pool[i], [i]), 5, replace=False) for i in rows])
    (ws / "features").mkdir()
    np.savez(ws / "features" / "neighbours.npz", idx=idx.astype(np.int32), sim=np.full(idx.shape, 0.5, np.float32),
             n_train=n, n_test=len(texts) - n, text_sha=nb.text_sha(texts))
    return ws / "features" / "neighbours.npz"


def test_the_ensemble_smooths_every_member(tmp_path):
    ws = fake_workspace(tmp_path)
    graph = with_graph(ws)
    manifests = [str(p) for p in sorted(ws.glob("folds/*/manifest.json"))]
    proc, folds = ws / "data" / "processed", ws / "folds" / "folds.csv"
    assert ensemble.load_members(manifests, ensemble.Ensemble(neighbours=0), proc, folds).smoothed is None
    data = ensemble.load_members(manifests, ensemble.Ensemble(neighbours=0.5, neighbours_k=4), proc, folds, graph)
    assert data.smoothed.oof.shape == data.oof.shape and not np.allclose(data.smoothed.oof, data.oof)
    texts = [f"train text {i}" for i in range(90)] + [f"test text {i}" for i in range(20)]
    idx, sim = nb.load(graph, texts, 90, 4)
    want = nb.smooth_test(data.test[:, 1], nb.one_hot(data.y, 3), idx, sim, 0.5, 4, 3.0)
    np.testing.assert_allclose(data.smoothed.test[:, 1], want)


@pytest.mark.parametrize("multilabel", [False, True])
def test_a_method_keeps_smoothing_only_where_it_raises_nested_cv(tmp_path, monkeypatch, multilabel):
    ws = fake_workspace(tmp_path, multilabel=multilabel)
    monkeypatch.chdir(ws)
    y = ensemble.load_members([str(p) for p in ws.glob("folds/*/manifest.json")], ensemble.Ensemble(neighbours=0),
                              ws / "data" / "processed", ws / "folds" / "folds.csv").y
    with_graph(ws, labels=y.argmax(1) if multilabel else y)  # neighbours that share the row's label
    ensemble_yaml(ws, neighbours=0.5, neighbours_k=4, methods=["mean"], members=["weak"])  # good alone scores 1
    ensemble.main(["fit", "--method=mean", "--neighbours=features/neighbours.npz"])
    scores = json.loads((ws / "ensemble" / "mean" / "scores.json").read_text())
    assert scores["cv_by_neighbours"]["on"] > scores["cv_by_neighbours"]["off"]
    assert scores["neighbours"] == {"alpha": 0.5, "k": 4, "power": 3.0} and scores["cv"] == \
        scores["cv_by_neighbours"]["on"]
    ensemble_yaml(ws, neighbours=0.5, neighbours_k=4, neighbours_use="always", methods=["mean"], members=["weak"])
    ensemble.main(["fit", "--method=mean", "--neighbours=features/neighbours.npz"])
    scores = json.loads((ws / "ensemble" / "mean" / "scores.json").read_text())
    assert scores["neighbours"]["alpha"] == 0.5 and list(scores["cv_by_neighbours"]) == ["on"]
    ensemble_yaml(ws, neighbours=0.0, methods=["mean"])  # off: one cross-fit, nothing recorded
    ensemble.main(["fit", "--method=mean", "--neighbours=features/neighbours.npz"])
    scores = json.loads((ws / "ensemble" / "mean" / "scores.json").read_text())
    assert scores["neighbours"] is None and list(scores["cv_by_neighbours"]) == ["off"]


def test_a_graph_of_other_texts_or_fewer_neighbours_is_refused_in_one_line(tmp_path, monkeypatch):
    ws = fake_workspace(tmp_path)
    graph = with_graph(ws)
    texts = [f"train text {i}" for i in range(90)] + [f"test text {i}" for i in range(20)]
    assert nb.load(graph, texts, 90, 5)[0].shape == (110, 5)
    for other, k in ((texts[:-1], 5), (texts[:-1] + ["edited"], 5), (texts, 6)):
        with pytest.raises(InputError, match=r"neighbours.npz: built for other texts or a smaller neighbours_k "
                                             r"\(90 train \+ 20 test rows, 5 neighbours each"):
            nb.load(graph, other, 90, k)
    monkeypatch.chdir(ws)
    ensemble_yaml(ws, neighbours=0.5, neighbours_k=6)
    with pytest.raises(SystemExit) as exc:
        ensemble.main(["fit", "--method=mean", "--neighbours=features/neighbours.npz"])
    assert "built for other texts" in str(exc.value.code) and "\n" not in str(exc.value.code)
    with pytest.raises(SystemExit, match="key 'neighbours' must be at least 0"):
        ensemble.main(["fit", "--method=mean", "--config=" + str(ensemble_yaml(ws, neighbours=1.5))])
    with pytest.raises(SystemExit, match="key 'neighbours_power' must be above 0"):  # 0 ** 0 would let padding vote
        ensemble.main(["fit", "--method=mean", "--config=" + str(ensemble_yaml(ws, neighbours_power=0))])


def test_the_vote_is_the_same_in_chunks():
    rng = np.random.default_rng(2)
    n, C, k = 1500, 4096, 8  # many classes: the vote runs in chunks of 512 rows
    values, idx = rng.random((n, C)), rng.integers(0, n, (n, k))
    sim = rng.random((n, k)).astype(np.float32)
    rows = np.arange(n)
    w = sim.astype(np.float64) ** 2
    want = np.einsum("rk,rkc->rc", w, values[idx]) / w.sum(1)[:, None]
    np.testing.assert_allclose(nb.vote(rows, values, idx, sim, k, 2.0, values), want)
