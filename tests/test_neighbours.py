"""Transductive neighbour smoothing (foldstack.neighbours, ensemble.yaml `neighbours`, `neighbours_embed`): the
graphs find near duplicates, a held-out fold's smoothed rows never see that fold's labels, two graphs add their
votes, and the ensemble refuses a stale graph."""
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


def test_the_embedding_graph_ranks_by_cosine_and_never_the_row_itself():
    E = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 2, 0.2], [0, 0, 0]], dtype=np.float32)
    idx, sim = nb.build_dense(E, k=2, chunk=2)  # chunks of 2 rows: the row's own column is found in every chunk
    assert (idx[0, 0], idx[1, 0], idx[2, 0], idx[3, 0]) == (1, 0, 3, 2)
    assert all(i not in idx[i][sim[i] > 0] for i in range(5)) and (np.diff(sim, axis=1) <= 1e-6).all()
    assert sim[4].max() == 0 and sim[0, 1] == 0, "a zero vector (an empty text) neither votes nor is voted for"
    np.testing.assert_allclose(sim[3, 0], 2 / np.hypot(2, 0.2), rtol=1e-6)  # cosine: the norms do not count
    idx, sim = nb.build_dense(E[:2], k=3)  # fewer rows than k: the missing places cast no vote
    assert idx[0, 0] == 1 and sim[0, 1:].max() == 0
    # Duplicates tie: the lower rows vote, whatever the number of rows (training's graph and predict's agree)
    idx, _ = nb.build_dense(np.ones((30, 3), np.float32), k=3, chunk=7)
    assert idx[0].tolist() == [1, 2, 3] and idx[29].tolist() == [0, 1, 2]


@pytest.mark.parametrize("two_graphs", [False, True])
def test_a_held_out_fold_never_sees_its_own_labels(two_graphs):
    rng, fold_of, oof, fold_tests, y, idx, sim = random_case()
    args = dict(graphs=[nb.Graph(idx, sim, 0.5, 6, 3.0)])
    if two_graphs:  # the TF-IDF and the embedding graph: neither lets fold 0's labels in
        args = dict(graphs=[nb.Graph(idx, sim, 0.3, 6, 3.0), nb.Graph(idx[::-1].copy(), sim, 0.2, 4, 10.0)])
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
    graphs = [nb.Graph(idx, sim, 0.4, 5, 2.0), nb.Graph(idx[::-1].copy(), sim, 0.2, 6, 10.0)]
    each = np.mean([nb.smooth_test(t, labels, graphs) for t in fold_tests], 0)
    np.testing.assert_allclose(nb.smooth_test(np.mean(fold_tests, 0), labels, graphs), each)


def test_two_graphs_add_their_moves():
    """Smoothing over two graphs = the row plus each graph's own move (alphas are shares of one prediction)."""
    _, fold_of, oof, fold_tests, y, idx, sim = random_case()
    labels = nb.one_hot(y, 3)
    g1, g2 = nb.Graph(idx, sim, 0.3, 6, 3.0), nb.Graph(idx[::-1].copy(), sim, 0.2, 5, 10.0)
    for smooth, p in ((lambda gs: nb.smooth_test(fold_tests[0], labels, gs), fold_tests[0]),
                      (lambda gs: nb.smooth_oof(oof, fold_of, fold_tests, labels, gs), oof)):
        np.testing.assert_allclose(smooth([g1, g2]), p + (smooth([g1]) - p) + (smooth([g2]) - p))
        np.testing.assert_allclose(smooth([g1, g2]).sum(1), 1.0)


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
    data = ensemble.load_members(manifests, ensemble.Ensemble(neighbours=0.5, neighbours_k=4), proc, folds,
                                 {"tfidf": graph})
    assert data.smoothed.oof.shape == data.oof.shape and not np.allclose(data.smoothed.oof, data.oof)
    texts = [f"train text {i}" for i in range(90)] + [f"test text {i}" for i in range(20)]
    idx, sim = nb.load(graph, texts, 90, 4)
    want = nb.smooth_test(data.test[:, 1], nb.one_hot(data.y, 3), [nb.Graph(idx, sim, 0.5, 4, 3.0)])
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


def test_the_embedding_graph_smooths_only_a_blend_with_its_member(tmp_path, monkeypatch):
    """neighbours_embed is the embedding graph's share of the move, taken when its embed_lr member is in the blend
    (predict embeds the new texts with it); its graph must carry that member's config hash."""
    ws = fake_workspace(tmp_path)
    tfidf = with_graph(ws)
    embed = ws / "features" / "neighbours_k4_good.npz"
    manifest = ws / "folds" / "good" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "config_hash": "abc"}))
    with np.load(tfidf) as z:
        np.savez(embed, **{key: z[key] for key in z.files}, train_embeddings=np.zeros((90, 2), np.float32),
                 model_hash="abc")
    manifests = [str(p) for p in sorted(ws.glob("folds/*/manifest.json"))]
    proc, folds = ws / "data" / "processed", ws / "folds" / "folds.csv"
    cfg = ensemble.Ensemble(neighbours=0.5, neighbours_k=4, neighbours_embed=0.2, neighbours_embed_model="good")
    assert cfg.smoothing(["weak"]) == {"alpha": 0.5, "k": 4, "power": 3.0}  # all TF-IDF without the member
    assert cfg.smoothing(["good", "weak"]) == {"alpha": 0.3, "k": 4, "power": 3.0,
                                               "embed": {"alpha": 0.2, "power": 10.0, "model": "good"}}
    data = ensemble.load_members(manifests, cfg, proc, folds, {"tfidf": tfidf, "embed": embed})
    texts = [f"train text {i}" for i in range(90)] + [f"test text {i}" for i in range(20)]
    idx, sim = nb.load(tfidf, texts, 90, 4)
    want = nb.smooth_test(data.test[:, 1], nb.one_hot(data.y, 3), [nb.Graph(idx, sim, 0.3, 4, 3.0),
                                                                    nb.Graph(idx, sim, 0.2, 4, 10.0)])
    np.testing.assert_allclose(data.smoothed.test[:, 1], want)
    assert data.smoothed.smoothing == cfg.smoothing(["good", "weak"])
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "config_hash": "edited"}))
    with pytest.raises(InputError, match=r"neighbours_k4_good.npz: not the embeddings of these 90 train rows by "
                                         r"the member's current config"):
        ensemble.load_members(manifests, cfg, proc, folds, {"tfidf": tfidf, "embed": embed})
    monkeypatch.chdir(ws)
    ensemble_yaml(ws, neighbours=0.2, neighbours_k=4, neighbours_embed=0.2, neighbours_embed_model="good",
                  methods=["mean"])  # all of the move by embeddings: no TF-IDF graph is read
    tfidf.unlink()
    embed.unlink()  # the default path, missing: one line naming it
    with pytest.raises(SystemExit) as exc:
        ensemble.main(["fit", "--method=mean"])
    assert "features/neighbours_k4_good.npz not found" in str(exc.value.code)
    with pytest.raises(SystemExit, match="key 'neighbours_embed' must be at least 0 and at most neighbours"):
        ensemble.main(["fit", "--method=mean", "--config=" + str(ensemble_yaml(ws, neighbours=0.1,
                                                                                neighbours_embed=0.2))])


def test_the_vote_is_the_same_in_chunks():
    rng = np.random.default_rng(2)
    n, C, k = 1500, 4096, 8  # many classes: the vote runs in chunks of 512 rows
    values, idx = rng.random((n, C)), rng.integers(0, n, (n, k))
    sim = rng.random((n, k)).astype(np.float32)
    rows = np.arange(n)
    w = sim.astype(np.float64) ** 2
    want = np.einsum("rk,rkc->rc", w, values[idx]) / w.sum(1)[:, None]
    np.testing.assert_allclose(nb.vote(rows, values, idx, sim, k, 2.0, values), want)
