"""Classical base models (TF-IDF -> LogisticRegression / LightGBM / calibrated LinearSVC / NB-SVM, frozen
embeddings -> LogisticRegression) on tiny data: the fold contract, multi-label,
and params checking (an unknown key stops training with one line naming the file and the key)."""
import numpy as np
import pytest
import yaml

from foldstack import classical, config, kinds, train
from tests.conftest import FAST, corpus, write_competition

KINDS = list(FAST)


@pytest.fixture
def cache_for(tiny_bert, tmp_path):
    """fit_predict's `cache` argument: embed_lr's pooled embeddings (of a tiny random BERT), else None."""
    def make(kind, cfg, texts):
        if kind != "embed_lr":
            return None
        from foldstack.hidden_cache import open_pooled, unique_texts
        all_texts = unique_texts(*texts.values())
        return open_pooled(cfg.options, all_texts, tmp_path / "cache")
    return make


def model_cfg(kind, tiny_bert):
    params = dict(FAST[kind], backbone=str(tiny_bert)) if kind == "embed_lr" else FAST[kind]
    return config.Model(kind=kind, params=params)


def split(n_train=150, n_val=50, n_test=30, seed=2):
    texts, y = corpus(n_train + n_val + n_test, seed=seed)
    parts = {"train": texts[:n_train], "val": texts[n_train:n_train + n_val], "test": texts[n_train + n_val:]}
    return parts, y


@pytest.mark.parametrize("kind", KINDS)
def test_multiclass_fold_contract(kind, tmp_path, tiny_bert, cache_for):
    texts, y = split()
    cfg = model_cfg(kind, tiny_bert)
    comp = config.Competition(metric="accuracy")
    res = classical.fit_predict(cfg, comp, texts, {"train": y[:150], "val": y[150:200]}, 3, tmp_path / "f.log", 0,
                                cache_for(kind, cfg, texts))
    assert res["val"].shape == (50, 3) and res["test"].shape == (30, 3)
    assert res["val"].dtype == np.float32 and res["test"].dtype == np.float32
    np.testing.assert_allclose(res["val"].sum(1), 1, atol=1e-4)
    # a random tiny encoder's embeddings carry less of the class words than n-grams do
    assert res["score"] > (0.6 if kind == "embed_lr" else 0.8), "class-dependent words must be learnable"
    assert res["score"] == pytest.approx((res["val"].argmax(1) == y[150:200]).mean())
    assert "fit_secs" in res and (tmp_path / "f.log").read_text().strip()


@pytest.mark.parametrize("kind", KINDS)
def test_multilabel_one_vs_rest(kind, tmp_path, tiny_bert, cache_for):
    texts, k = split(seed=3)
    y = np.zeros((len(k), 4), dtype=np.float32)
    y[np.arange(len(k)), k] = 1
    y[::3, (k[::3] + 1) % 3] = 1  # a third of the rows carry a second label
    y[:2, 3] = 1                 # label 3: too rare in training for a model of its own
    cfg = model_cfg(kind, tiny_bert)
    comp = config.Competition(task="multilabel", metric="micro_f1")
    res = classical.fit_predict(cfg, comp, texts, {"train": y[:150], "val": y[150:200]}, 4, tmp_path / "f.log", 0,
                                cache_for(kind, cfg, texts))
    assert res["val"].shape == (50, 4) and res["test"].shape == (30, 4)
    assert ((res["val"] >= 0) & (res["val"] <= 1)).all()
    assert not np.allclose(res["val"].sum(1), 1), "independent per-label probabilities, not a softmax"
    assert res["val"][:, 3].max() < 0.5
    assert res["score"] > (0.5 if kind == "embed_lr" else 0.7)


def test_nb_ratio_favours_the_class_features():
    import scipy.sparse as sp
    X = sp.csr_matrix(np.array([[3, 0, 1], [2, 0, 1], [0, 4, 1], [0, 3, 1]], dtype=np.float32))
    r = classical.nb_ratio(X, np.array([1, 1, 0, 0]), alpha=1.0)
    assert r[0] > 0 > r[1] and abs(r[2]) < abs(r[0])


def test_vectorizers_fit_on_training_texts_only():
    texts, _ = split()
    texts["test"] = ["zzyzx " * 5] * 30  # a word only the test set has
    p = config.Model(kind="tfidf_lr", params={"min_df": 1, "char_ngrams": None}).options
    X, n_features = classical.vectorize(p, texts)
    assert X["train"].shape[1] == X["test"].shape[1] == n_features and X["test"].nnz == 0
    # one-vs-rest workers receive read-only memory maps, so the matrices must already be canonical
    assert all(m.has_sorted_indices and m.dtype == np.float32 for m in X.values())


@pytest.mark.parametrize("kind,seen", [("tfidf_lr", 0), ("tfidf_svm", 0), ("tfidf_svm", 1), ("nbsvm", 0)])
def test_class_missing_from_training_rows_gets_a_zero_column(tmp_path, kind, seen):
    texts, y = split()
    y_train = np.where(y[:150] == 2, 0, y[:150])  # class 2 never seen in training ...
    y_train[np.flatnonzero(y[:150] == 2)[:seen]] = 2  # ... or seen once: too rare to calibrate on
    cfg = config.Model(kind=kind, params=FAST[kind])
    res = classical.fit_predict(cfg, config.Competition(), texts, {"train": y_train, "val": y[150:200]}, 3,
                                tmp_path / "f.log", 0)
    assert res["val"].shape == (50, 3) and np.allclose(res["val"].sum(1), 1, atol=1e-4)
    assert (res["val"][:, 2] == 0).all() if kind != "nbsvm" else (res["val"][:, 2] < 0.5).all()


def test_params_are_checked():
    def load(raw):
        return config.from_mapping(config.Model, raw, "m.yaml")
    with pytest.raises(config.ConfigError, match=r"m\.yaml: unknown key 'params.svd'"):
        load({"kind": "tfidf_lgbm", "params": {"svd": 3}})
    with pytest.raises(config.ConfigError, match=r"m\.yaml: key 'params.C': expected float"):
        load({"kind": "tfidf_lr", "params": {"C": "big"}})
    with pytest.raises(config.ConfigError, match=r"key 'params.char_ngrams' must be \[min_n, max_n\]"):
        load({"kind": "tfidf_lr", "params": {"char_ngrams": [5, 2]}})
    p = load({"kind": "tfidf_lr", "params": {"char_ngrams": None, "C": 3}}).options
    assert type(p) is kinds.TfidfLR and p.char_ngrams is None and p.C == 3.0 and p.word_ngrams == (1, 2)
    assert type(load({"kind": "nbsvm"}).options) is kinds.NBSVM  # no params: the kind's defaults


def test_each_kind_has_only_its_own_keys():
    """A classical kind refuses a transformer's options and a transformer refuses `params:`: a key that would be
    silently ignored is an error (naming where it belongs, when the kind has it)."""
    with pytest.raises(config.ConfigError, match=r"m\.yaml: key 'max_len' is a transformer option; kind: embed_lr "
                                                 r"does not use it \(its own is params.max_len\)"):
        config.from_mapping(config.Model, {"kind": "embed_lr", "max_len": 64}, "m.yaml")
    with pytest.raises(config.ConfigError, match=r"key 'epochs' is a transformer option; kind: tfidf_lr"):
        config.from_mapping(config.Model, {"kind": "tfidf_lr", "epochs": 3}, "m.yaml")
    with pytest.raises(config.ConfigError, match=r"m\.yaml: key 'params' belongs to the classical kinds"):
        config.from_mapping(config.Model, {"kind": "transformer", "params": {"C": 1}}, "m.yaml")
    assert [key for key, _ in config.Model(params={"C": 1}).check()] == ["params"]  # built in code
    assert [key for key, _ in config.Model(kind="nbsvm", params={"Cee": 1}).check()] == ["params"]


def test_params_override_on_the_command_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("kind: tfidf_lr\nparams:\n  C: 2.0\n  min_df: 3\n")
    cfg = config.load(config.Model, path, config.parse_overrides(["--params.C=5", "--seed=1"]))
    assert (cfg.options.C, cfg.options.min_df, cfg.seed) == (5.0, 3, 1)
    with pytest.raises(config.ConfigError, match=r"unknown key 'params.Cee'"):
        config.load(config.Model, path, config.parse_overrides(["--params.Cee=5"]))


def test_train_stops_on_unknown_params_key_naming_the_file(tmp_path, monkeypatch):
    write_competition(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "lr.yaml").write_text(yaml.safe_dump({"kind": "tfidf_lr", "params": {"Cee": 1}}))
    with pytest.raises(SystemExit) as exc:
        train.main(["--model=models/lr.yaml", "--fold=0", "--out-dir=folds/lr"])
    assert str(exc.value.code).startswith("error: models/lr.yaml: unknown key 'params.Cee'")
    assert "\n" not in str(exc.value.code)


@pytest.mark.parametrize("name", ["tfidf_lr", "tfidf_lgbm", "tfidf_svm", "nbsvm", "embed_lr"])
def test_shipped_model_configs_load(name):
    from tests.conftest import ROOT
    path = ROOT / "models" / f"{name}.yaml"
    path = path if path.exists() else ROOT / "models" / "extra" / f"{name}.yaml"
    cfg = config.load(config.Model, path)
    assert cfg.kind == name and type(cfg.options) is kinds.PARAMS[name]
    for key, value in cfg.params.items():  # the YAML's value wins over the default
        assert getattr(cfg.options, key) == (tuple(value) if isinstance(value, list) else value), key
