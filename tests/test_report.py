"""`make report`: the HTML page builds on tiny pipelines (multi-class with a pseudo round, multi-label), every image it
references exists and is a PNG, it fetches nothing, and text from the data stays text."""
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import yaml

from foldstack import report_html
from tests.conftest import FAST, TINY, empty_workspace, make, write_competition, write_multilabel

PNG = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script> & <b>bold</b>"


class Refs(HTMLParser):
    """Every src / href and every tag name of a page."""

    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href")]


def check_page(folder, sections):
    html = (folder / "index.html").read_text()
    parser = Refs()
    parser.feed(html)
    assert "script" not in parser.tags, "no script runs in the report"
    assert parser.refs, "the page shows figures"
    for ref in parser.refs:
        assert not re.match(r"[a-z]+:", ref), f"{ref}: the page must open offline, from disk"
        assert (folder / ref).read_bytes()[:8] == PNG, f"{ref} is not a PNG"
    for heading in sections:
        assert heading in html
    return html


def workspace(tmp_path, models: dict):
    ws = tmp_path / "ws"
    empty_workspace(ws)
    for name, keys in models.items():
        (ws / "models" / f"{name}.yaml").write_text(yaml.safe_dump(keys))
    return ws


@pytest.mark.slow
def test_multiclass_report_with_a_pseudo_round(tmp_path):
    ws = workspace(tmp_path, {"tfidf_lr": {"kind": "tfidf_lr", "params": FAST["tfidf_lr"]},
                              "nbsvm": {"kind": "nbsvm", "params": FAST["nbsvm"]}})
    write_competition(ws, n_train=90, n_test=30)
    train = pd.read_csv(ws / "data" / "raw" / "train.csv")
    train.loc[:, "text"] = EVIL + " " + train["text"]  # every row, so the mistakes table shows it
    train.loc[:5, "label"] = train.loc[:5, "label"].map({"neg": "pos", "neu": "neg", "pos": "neu"})  # mistakes
    train.to_csv(ws / "data" / "raw" / "train.csv", index=False)
    (ws / "ensemble" / "ensemble.yaml").write_text(yaml.safe_dump({"methods": ["mean", "weighted"]}))
    (ws / "features" / "pseudo.yaml").write_text(yaml.safe_dump({"threshold": 0.34, "agreement": False}))
    make(ws, "submit", "ROUND=1")
    out = make(ws, "report", "ROUND=1")
    assert "CV accuracy" in out and "report: reports/r1/index.html" in out
    html = check_page(ws / "reports" / "r1", ["Leaderboard", "Confusion", "Calibration", "Pseudo-label rounds",
                                              "Most confident mistakes"])
    assert EVIL not in html and "&lt;script&gt;alert(" in html, "data text is escaped"
    assert "<th>test</th>" in html, "data/solution.csv exists: test scores are shown"
    assert "pseudo_rounds.png" in html and "confusion_blend.png" in html
    make(ws, "report")
    check_page(ws / "reports", ["Leaderboard"])


@pytest.mark.slow
def test_multilabel_report_with_training_curves(tmp_path, tiny_roberta):
    ws = workspace(tmp_path, {"tiny": {**TINY, "backbone": str(tiny_roberta), "max_len": 32},
                              "tfidf_svm": {"kind": "tfidf_svm", "params": FAST["tfidf_svm"]}})
    write_multilabel(ws)
    (ws / "ensemble" / "ensemble.yaml").write_text(yaml.safe_dump({"methods": ["mean", "weighted"]}))
    make(ws, "report")
    html = check_page(ws / "reports", ["Labels: F1 against frequency", "Calibration", "Training curves",
                                       "Most confident mistakes"])
    assert "training_curves.png" in html and "label_f1.png" in html and "threshold_curve.png" in html and "confusion_blend.png" not in html
    assert "<th>test</th>" not in html, "no solution file: no test column"


def test_reliability_and_agreement_numbers():
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    conf, freq, ece = report_html.reliability_curve(probs, y, False, bins=10)
    # bins: 0.6 (wrong), 0.7 (right), 0.8 (right), 0.9 (right)
    assert np.allclose(conf, [0.6, 0.7, 0.8, 0.9]) and np.allclose(freq, [0, 1, 1, 1])
    assert ece == pytest.approx((0.6 + 0.3 + 0.2 + 0.1) / 4)
    other = probs[:, ::-1]
    corr, overlap = report_html.agreement({"a": probs, "b": probs, "c": other}, y, False)
    assert corr[0, 1] == pytest.approx(1) and corr[0, 2] == pytest.approx(-1)
    assert overlap[0, 1] == 1 and overlap[0, 2] == 0, "a and c are never wrong on the same row"
