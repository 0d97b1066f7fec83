"""`make predict` and `make export`: the trained pipeline applied to a test file, in the workspace and through an
offline bundle, reproduces training's test arrays and submission; a bundle refuses missing, edited or foreign files.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from foldstack import bundle, cli, fold_models
from tests.conftest import FAST, TINY, empty_workspace, make, write_competition, write_multilabel

TOL = {"tiny_bert": 1e-5, "tiny_frozen": 1e-4}  # frozen layers: the same float16 cache path as training
CLASSICAL_TOL = 1e-5


def run_predict(*args: str, cwd) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "foldstack.cli", "predict", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def models_for(tiny_bert) -> dict:
    bert = {**TINY, "backbone": str(tiny_bert), "max_len": 48}
    return {"tiny_bert": bert,
            "tiny_frozen": {**bert, "freeze_layers": 1, "seeds": [1, 2]},
            "tfidf_lr": {"kind": "tfidf_lr", "text": "lemma", "params": FAST["tfidf_lr"]},
            "nbsvm": {"kind": "nbsvm", "params": FAST["nbsvm"]},
            "tfidf_lgbm": {"kind": "tfidf_lgbm", "params": FAST["tfidf_lgbm"]},
            "embed_lr": {"kind": "embed_lr", "params": {**FAST["embed_lr"], "backbone": str(tiny_bert)}}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert):
    """A multi-class workspace with every member kind, blended by stack_lr (and mean), submitted."""
    ws = tmp_path_factory.mktemp("predict") / "ws"
    empty_workspace(ws)
    write_competition(ws, n_train=90, n_test=30)
    for name, keys in models_for(tiny_bert).items():
        (ws / "models" / f"{name}.yaml").write_text(yaml.safe_dump(keys))
    # Neighbour smoothing off: it is transductive, so a subset of the test file (below) would be predicted from
    # another graph; test_neighbour_smoothing_predicts_like_training... covers it.
    (ws / "ensemble" / "ensemble.yaml").write_text(yaml.safe_dump({"methods": ["mean", "stack_lr"],
                                                                   "submit": "stack_lr", "neighbours": 0,
                                                                   "neighbours_embed": 0}))
    make(ws, "submit")
    return ws



def check_equal_to_training(ws, probs_dir, method="stack_lr"):
    for name in models_for(None):
        got, want = np.load(probs_dir / f"{name}.npy"), np.load(ws / "folds" / name / "test.npy")
        np.testing.assert_allclose(got, want, atol=TOL.get(name, CLASSICAL_TOL), err_msg=name)
        assert (got.argmax(1) == want.argmax(1)).mean() >= 0.999, name
    np.testing.assert_allclose(np.load(probs_dir / f"{method}.npy"), np.load(ws / "ensemble" / method / "test.npy"),
                               atol=5e-3)


@pytest.mark.slow
def test_predict_reproduces_training_test_arrays_and_submission(trained):
    out = make(trained, "predict", "TEST=data/raw/test.csv", "SAMPLE=data/raw/sample_submission.csv",
               "OUT=submissions/predict.csv")
    assert "rows/s" in out
    check_equal_to_training(trained, trained / "submissions" / "predict.probs")
    assert (trained / "submissions" / "predict.csv").read_text() == \
        (trained / "submissions" / "stack_lr.csv").read_text()


@pytest.mark.slow
def test_predict_without_a_sample_and_another_method(trained, tmp_path):
    test = pd.read_csv(trained / "data" / "raw" / "test.csv")
    rows = np.random.default_rng(0).permutation(len(test))[:12]  # another file: shuffled, ids renamed
    new = test.iloc[rows].assign(id=[f"new_{i}" for i in range(12)])
    new.to_csv(tmp_path / "new.csv", index=False)
    make(trained, "predict", f"TEST={tmp_path / 'new.csv'}", f"OUT={tmp_path / 'sub.csv'}", "METHOD=mean")
    sub = pd.read_csv(tmp_path / "sub.csv")
    assert list(sub.columns) == ["id", "label"] and list(sub["id"]) == list(new["id"])
    want = np.load(trained / "ensemble" / "mean" / "test.npy")[rows]
    np.testing.assert_allclose(np.load(tmp_path / "sub.probs" / "mean.npy"), want, atol=5e-3)


@pytest.mark.slow
def test_bundle_predicts_offline_like_the_workspace(trained, tmp_path):
    make(trained, "export", f"DIR={tmp_path / 'bundle'}")
    man = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert man["method"] == "stack_lr" and set(man["members"]) == set(models_for(None))
    assert (tmp_path / "bundle" / "nltk_data" / "corpora" / "wordnet").is_dir(), "tfidf_lr reads lemmas"
    wheels = {p.name.split("-")[0] for p in (tmp_path / "bundle" / "wheels").glob("*.whl")}
    assert {"foldstack", "scikit_learn", "lightgbm"} <= wheels, wheels  # lightgbm: tfidf_lgbm is a member
    elsewhere = tmp_path / "elsewhere"  # no workspace, no training artefacts
    elsewhere.mkdir()
    shutil.copy(trained / "data" / "raw" / "test.csv", elsewhere / "test.csv")
    shutil.copy(trained / "data" / "raw" / "sample_submission.csv", elsewhere / "sample.csv")
    run_predict("--bundle", str(tmp_path / "bundle"), "test.csv", "--sample=sample.csv", "--out=sub.csv",
                "--probs-dir=probs", cwd=elsewhere)
    check_equal_to_training(trained, elsewhere / "probs")
    assert (elsewhere / "sub.csv").read_text() == (trained / "submissions" / "stack_lr.csv").read_text()


@pytest.mark.slow
def test_half_precision_bundle_is_smaller_and_agrees(trained, tmp_path):
    make(trained, "export", f"DIR={tmp_path / 'full'}", "METHOD=mean", "WHEELS=0")
    make(trained, "export", f"DIR={tmp_path / 'half'}", "METHOD=mean", "HALF=bf16", "WHEELS=0")
    full = tmp_path / "full" / "folds" / "tiny_bert" / "fold0.safetensors"
    half = tmp_path / "half" / "folds" / "tiny_bert" / "fold0.safetensors"
    assert half.stat().st_size < 0.6 * full.stat().st_size
    shutil.copy(trained / "data" / "raw" / "test.csv", tmp_path / "test.csv")
    run_predict("--bundle", str(tmp_path / "half"), "test.csv", "--out=sub.csv", "--probs-dir=probs", cwd=tmp_path)
    got, want = np.load(tmp_path / "probs" / "tiny_bert.npy"), np.load(trained / "folds" / "tiny_bert" / "test.npy")
    np.testing.assert_allclose(got, want, atol=2e-2)  # bf16 keeps 8 bits of mantissa
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


@pytest.mark.slow
def test_neighbour_smoothing_predicts_like_training_in_the_workspace_and_a_bundle(tmp_path, tiny_bert):
    """A blend fitted on smoothed members (ensemble.yaml `neighbours` and `neighbours_embed`): predict rebuilds both
    graphs over the train texts and the new file's (the embedding graph from embed_lr's embeddings), and
    reproduces training's blend; a bundle carries the train texts and train embeddings it needs."""
    ws = empty_workspace(tmp_path / "ws")
    write_competition(ws, n_train=90, n_test=30)
    members = {kind: {"kind": kind, "params": FAST[kind]} for kind in ("tfidf_lr", "nbsvm")}
    members["embed_lr"] = models_for(tiny_bert)["embed_lr"]
    for name, keys in members.items():
        (ws / "models" / f"{name}.yaml").write_text(yaml.safe_dump(keys))
    (ws / "ensemble" / "ensemble.yaml").write_text(yaml.safe_dump(
        {"methods": ["mean", "stack_lr"], "submit": "stack_lr", "neighbours": 0.6, "neighbours_k": 5,
         "neighbours_embed": 0.2, "neighbours_use": "always"}))
    log = make(ws, "submit")
    assert "foldstack.neighbours --k=5 --out" in log and "foldstack.neighbours --k=5 --embed-model" in log
    assert json.loads((ws / "ensemble" / "stack_lr" / "scores.json").read_text())["neighbours"] == \
        {"alpha": 0.4, "k": 5, "power": 3.0, "embed": {"alpha": 0.2, "power": 10.0, "model": "embed_lr"}}
    make(ws, "export", f"DIR={tmp_path / 'bundle'}", "WHEELS=0")
    assert (tmp_path / "bundle" / "data" / "processed" / "train.parquet").exists()
    with np.load(tmp_path / "bundle" / "features" / "neighbours_k5_embed_lr.npz") as z:
        assert sorted(z.files) == ["model_hash", "train_embeddings"] and z["train_embeddings"].shape[0] == 90
    shutil.copy(ws / "data" / "raw" / "test.csv", tmp_path / "test.csv")
    for where in (["--workspace", str(ws)], ["--bundle", str(tmp_path / "bundle")]):
        run_predict(*where, "test.csv", "--out=sub.csv", "--probs-dir=probs", cwd=tmp_path)
        for member in members:  # the members' own probabilities, unsmoothed
            np.testing.assert_allclose(np.load(tmp_path / "probs" / f"{member}.npy"),
                                       np.load(ws / "folds" / member / "test.npy"), atol=CLASSICAL_TOL)
        np.testing.assert_allclose(np.load(tmp_path / "probs" / "stack_lr.npy"),
                                   np.load(ws / "ensemble" / "stack_lr" / "test.npy"), atol=1e-4)
        assert pd.read_csv(tmp_path / "sub.csv")["label"].tolist() == \
            pd.read_csv(ws / "submissions" / "stack_lr.csv")["label"].tolist()


@pytest.mark.slow
def test_bundle_refuses_missing_edited_and_foreign_files(trained, tmp_path):
    root = tmp_path / "b"
    make(trained, "export", f"DIR={root}", "METHOD=mean", "WHEELS=0")
    with pytest.raises(bundle.InputError, match="already exists"):
        bundle.export(bundle.Layout(trained), "mean", root)
    model = root / "folds" / "nbsvm" / "fold1.joblib"
    saved = model.read_bytes()
    model.write_bytes(saved + b"\0")
    with pytest.raises(bundle.InputError, match=r"nbsvm/fold1\.joblib: its SHA-256 differs"):
        bundle.verify(root)
    model.unlink()
    with pytest.raises(bundle.InputError, match=r"nbsvm/fold1\.joblib: missing from the bundle"):
        bundle.verify(root)
    model.write_bytes(saved)
    bundle.verify(root)
    man = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**man, "foldstack": "0.0.1"}))
    with pytest.raises(bundle.InputError, match="made by foldstack 0.0.1"):
        bundle.verify(root)


@pytest.mark.slow
def test_a_fold_without_its_model_is_named(trained, tmp_path):
    ws = tmp_path / "copy"
    shutil.copytree(trained, ws, symlinks=True)
    (ws / "folds" / "tfidf_lgbm" / "fold2.joblib").unlink()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "foldstack.predict", "--test=data/raw/test.csv", "--method=mean"],
                          cwd=ws, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "error: folds/tfidf_lgbm/fold2: no saved model (trained with keep_models: false? re-run make folds)")


@pytest.mark.slow
def test_multilabel_predict_uses_the_blend_thresholds(tmp_path, tiny_roberta):
    ws = tmp_path / "ml"
    empty_workspace(ws)
    write_multilabel(ws)
    (ws / "models" / "tiny_roberta.yaml").write_text(yaml.safe_dump({**TINY, "backbone": str(tiny_roberta)}))
    (ws / "models" / "tfidf_svm.yaml").write_text(yaml.safe_dump({"kind": "tfidf_svm", "params": FAST["tfidf_svm"]}))
    (ws / "ensemble" / "ensemble.yaml").write_text(yaml.safe_dump({"methods": ["weighted"], "submit": "weighted"}))
    make(ws, "submit")
    make(ws, "predict", "TEST=data/raw/test.csv", "SAMPLE=data/raw/sample_submission.csv")
    assert (ws / "submissions" / "predict.csv").read_text() == (ws / "submissions" / "weighted.csv").read_text()
    for name in ("tiny_roberta", "tfidf_svm"):
        np.testing.assert_allclose(np.load(ws / "submissions" / "predict.probs" / f"{name}.npy"),
                                   np.load(ws / "folds" / name / "test.npy"), atol=1e-5)


def test_fold_model_files_round_trip(tmp_path):
    import torch
    state = {"w": torch.randn(3, 4), "steps": torch.tensor([7])}
    fold_models.save([state, None, {"w": state["w"] * 2, "steps": state["steps"]}], tmp_path, 4)
    fold_models.save(state, tmp_path, 1)
    assert [p.name for p in fold_models.files(tmp_path, 4)] == ["fold4.s0.safetensors", "fold4.s2.safetensors"]
    assert [p.name for p in fold_models.files(tmp_path, 1)] == ["fold1.safetensors"] and not fold_models.files(tmp_path, 0)
    back = fold_models.load(tmp_path / "fold1.safetensors")
    assert torch.equal(back["w"], state["w"]) and torch.equal(back["steps"], state["steps"])
    fold_models.save_half(tmp_path / "fold1.safetensors", tmp_path / "half.safetensors", "fp16")
    half = fold_models.load(tmp_path / "half.safetensors")
    assert half["w"].dtype == torch.float32 and torch.allclose(half["w"], state["w"], atol=1e-2)
    assert torch.equal(half["steps"], state["steps"]), "integer tensors stay exact"


def test_cli_hands_predict_and_export_their_arguments(capsys):
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    assert "--bundle" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    assert "--half" in capsys.readouterr().out


def test_default_columns_without_a_sample():
    from foldstack import config, predict
    classes = ["a", "b", "c"]
    assert predict.default_columns(config.Competition(), classes) == ["label"]
    assert predict.default_columns(config.Competition(submission_values="probability"), classes) == classes
    assert predict.default_columns(config.Competition(task="binary", submission_values="probability"),
                                   ["neg", "pos"]) == ["label"]
    assert predict.default_columns(config.Competition(task="multilabel", label=("a", "b", "c")), classes) == classes


@pytest.mark.slow
def test_bad_test_files_stop_with_one_line(trained, tmp_path):
    test = pd.read_csv(trained / "data" / "raw" / "test.csv")
    test.drop(columns=["text"]).to_csv(tmp_path / "no_text.csv", index=False)
    test.to_csv(tmp_path / "tabs.csv", index=False, sep="\t")
    pd.concat([test, test.head(1)]).to_csv(tmp_path / "dup.csv", index=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for name, message in [("no_text.csv", "column 'text' is missing"), ("tabs.csv", "is the file separated by"),
                          ("dup.csv", "duplicate id 'te0'")]:
        done = subprocess.run([sys.executable, "-m", "foldstack.predict", f"--test={tmp_path / name}",
                               f"--out={tmp_path / 'out.csv'}"], cwd=trained, env=env, capture_output=True, text=True)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and message in lines[0] and name in lines[0], done.stderr
        assert not (tmp_path / "out.csv").exists()


def test_folds_with_different_frozen_layers_stop_naming_the_file(tmp_path):
    """The frozen layers run once for all folds: a fold whose frozen weights differ from the first's cannot share
    that pass, and stops with one line rather than predicting from another fold's lower layers."""
    import torch
    from foldstack.io import InputError
    from foldstack.predict import same_frozen_layers
    first = {"lower.w": torch.ones(2), "encoder.w": torch.ones(2)}
    same_frozen_layers({"lower.w": torch.ones(2), "encoder.w": torch.zeros(2)}, first, tmp_path / "fold1.safetensors")
    with pytest.raises(InputError, match=r"fold1\.safetensors: its frozen layers \(lower\.w\) differ"):
        same_frozen_layers({"lower.w": torch.zeros(2), "encoder.w": torch.ones(2)}, first,
                           tmp_path / "fold1.safetensors")
