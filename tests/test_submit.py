"""Submissions match the sample exactly, in every format; the gathered OOF covers every row once."""
import numpy as np
import pandas as pd
import pytest

from foldstack import config
from foldstack.gather import assemble
from foldstack.io import InputError
from foldstack.labels import label_y
from foldstack.submit import check_submission, to_frame

CLASSES = ["a", "b", "c"]
PROBS = np.array([[0.7, 0.2, 0.6], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], dtype=np.float32)
IDS = np.array(["t0", "t1", "t2"])


def sample(cols, ids=("t2", "t0", "t1")):  # the sample's row order differs from test.parquet's
    return pd.DataFrame({"id": list(ids), **{c: 0 for c in cols}})


def test_single_label_in_sample_order():
    sub = to_frame(PROBS, IDS, CLASSES, config.Competition(), sample(["label"]))
    assert sub.to_dict("list") == {"id": ["t2", "t0", "t1"], "label": ["c", "a", "b"]}


def test_per_class_probability_columns():
    sub = to_frame(PROBS, IDS, CLASSES, config.Competition(), sample(["c", "a", "b"]))
    assert list(sub.columns) == ["id", "c", "a", "b"] and sub.loc[1, "a"] == pytest.approx(0.7)


def test_multilabel_delimited_and_indicator():
    comp = config.Competition(task="multilabel", label=("topics",))
    sub = to_frame(PROBS, IDS, CLASSES, comp, sample(["topics"]))
    assert sub["topics"].tolist() == ["c", "a c", "b"]  # a row with nothing over 0.5 keeps its top label
    ind = to_frame(PROBS, IDS, CLASSES, config.Competition(task="multilabel", label=("a", "b", "c")),
                   sample(["a", "b", "c"]))
    assert ind[["a", "b", "c"]].to_numpy().tolist() == [[0, 0, 1], [1, 0, 1], [0, 1, 0]]
    assert (label_y(sub, CLASSES, comp, "x") == ind[["a", "b", "c"]].to_numpy()).all()


def test_binary_probability_of_the_second_class():
    comp = config.Competition(task="binary", submission_values="probability")
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    sub = to_frame(p, np.array(["t0", "t1"]), ["0", "1"], comp, sample(["target"], ids=("t0", "t1")))
    assert sub["target"].tolist() == pytest.approx([0.1, 0.8])


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.rename(columns={"label": "Label"}), "columns"),
    (lambda s: s.iloc[[1, 0, 2]].reset_index(drop=True), "row 2, column 'id'"),
    (lambda s: s.assign(label=["a", "zz", "b"]), "row 3, column 'label': label 'zz' is not in the class list"),
    (lambda s: s.iloc[:2], "2 rows, the sample has 3"),
])
def test_check_submission_refuses_mismatches(mutate, message):
    comp = config.Competition()
    good = to_frame(PROBS, IDS, CLASSES, comp, sample(["label"]))
    check_submission(good, sample(["label"]), CLASSES, comp, "sub.csv")
    with pytest.raises(InputError, match=message):
        check_submission(mutate(good), sample(["label"]), CLASSES, comp, "sub.csv")


def test_oof_assembly_requires_every_row_exactly_once():
    parts = [{"val_idx": np.array([0, 2]), "val": np.ones((2, 3)), "test": np.zeros((4, 3))},
             {"val_idx": np.array([1, 3]), "val": np.full((2, 3), 2.0), "test": np.ones((4, 3))}]
    oof, test = assemble(parts, 4)
    assert oof[:, 0].tolist() == [1, 2, 1, 2] and np.allclose(test, 0.5) and oof.dtype == np.float32
    parts[1]["val_idx"] = np.array([1, 2])  # row 2 twice, row 3 never
    with pytest.raises(ValueError, match="OOF row 2 was written 2 times"):
        assemble(parts, 4)
