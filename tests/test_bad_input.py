"""Bad input stops prep with one line naming the file, row and column, and leaves earlier artefacts intact."""
import pandas as pd
import pytest

from foldstack import prep
from tests.conftest import write_competition


def run_prep(ws, capsys=None):
    with pytest.raises(SystemExit) as exc:
        prep.main([f"--competition={ws}/data/competition.yaml", f"--out-dir={ws}/data/processed", "--workers=1"])
    message = str(exc.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.fixture
def ws(tmp_path, monkeypatch):
    write_competition(tmp_path)
    monkeypatch.chdir(tmp_path)  # the YAML's paths are relative to the workspace
    return tmp_path


def edit(path, fn):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


def test_missing_column(ws):
    edit(ws / "data/raw/train.csv", lambda df: df.drop(columns="text"))
    assert "data/raw/train.csv: column 'text' is missing" in run_prep(ws)


def test_empty_file(ws):
    (ws / "data/raw/test.csv").write_text("")
    assert "data/raw/test.csv: the file is empty" in run_prep(ws)


def test_wrong_separator(ws):
    df = pd.read_csv(ws / "data/raw/train.csv")
    df.to_csv(ws / "data/raw/train.csv", sep="\t", index=False)
    msg = run_prep(ws)
    assert "data/raw/train.csv" in msg and "separated by" in msg and "'sep'" in msg


def test_duplicate_ids(ws):
    edit(ws / "data/raw/train.csv", lambda df: df.assign(id=df["id"].where(df.index != 5, df["id"][2])))
    assert "data/raw/train.csv: row 7, column 'id': duplicate id 'tr2'" in run_prep(ws)


def test_nan_label(ws):
    edit(ws / "data/raw/train.csv", lambda df: df.assign(label=df["label"].where(df.index != 9, "")))
    assert "data/raw/train.csv: row 11, column 'label': the value is empty" in run_prep(ws)


def test_label_not_in_class_list(ws):
    """With per-class probability columns the sample fixes the class list; a train label outside it is refused."""
    pd.DataFrame({"id": [f"te{i}" for i in range(40)], "neg": 0.3, "neu": 0.3, "pos": 0.4}).to_csv(
        ws / "data/raw/sample_submission.csv", index=False)
    edit(ws / "data/raw/train.csv", lambda df: df.assign(label=df["label"].where(df.index != 3, "meh")))
    assert "data/raw/train.csv: row 5, column 'label': label 'meh' is not in the class list" in run_prep(ws)


def test_sample_ids_do_not_match_test(ws):
    edit(ws / "data/raw/sample_submission.csv", lambda df: df.assign(id=df["id"].where(df.index != 4, "zz")))
    assert "data/raw/sample_submission.csv: row 6, column 'id': id 'zz' is not in the test file" in run_prep(ws)


def test_unknown_config_key(ws):
    with open(ws / "data/competition.yaml", "a") as fh:
        fh.write("folds: 5\n")
    assert "data/competition.yaml: unknown key 'folds'" in run_prep(ws)


def test_empty_text_is_allowed_and_a_failed_run_keeps_the_old_artefact(ws):
    edit(ws / "data/raw/train.csv", lambda df: df.assign(text=df["text"].where(df.index != 0, "")))
    prep.main(["--competition=data/competition.yaml", "--out-dir=data/processed", "--workers=1"])
    train = pd.read_parquet(ws / "data/processed/train.parquet")
    assert train["text"].iloc[0] == "" and len(train) == 120
    before = (ws / "data/processed/train.parquet").read_bytes()
    (ws / "data/raw/test.csv").write_text("")
    run_prep(ws)
    assert (ws / "data/processed/train.parquet").read_bytes() == before
    assert not [p for p in (ws / "data/processed").iterdir() if p.name.startswith(".")], "no temp files left"


def test_lemmas_and_multilabel_columns(ws):
    edit(ws / "data/raw/train.csv", lambda df: df.assign(text=df["text"].where(df.index != 0, "The Mice were RUNNING")))
    prep.main(["--competition=data/competition.yaml", "--out-dir=data/processed", "--workers=1"])
    train = pd.read_parquet(ws / "data/processed/train.parquet")
    assert train["text"].iloc[0] == "The Mice were RUNNING"  # raw text keeps its case for cased encoders
    assert train["text_lemma"].iloc[0] == "the mouse be run"
