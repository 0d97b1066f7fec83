"""Bad input stops prep with one line naming the file, row and column, and leaves earlier artefacts intact."""
import pandas as pd
import pytest

from foldstack import prep
from tests.conftest import write_competition, write_multilabel


def run_prep(ws, capsys=None):
    with pytest.raises(SystemExit) as exc:
        prep.main([f"--competition={ws}/data/competition.yaml", f"--out-dir={ws}/data/processed", "--workers=1"])
    message = str(exc.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    print(message)  # `pytest -rP tests/test_bad_input.py` lists the matrix as printed
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


# --- the rest of the bad-input matrix (issue 14): encodings and file shapes, folds, configs, backbones, scoring,
# --- failed writes. Each case is one line naming file, row/line and column where they apply, or a clean read.

def prep_ok(ws):
    prep.main(["--competition=data/competition.yaml", "--out-dir=data/processed", "--workers=1"])
    return pd.read_parquet(ws / "data/processed/train.parquet")


def set_keys(ws, **keys):
    import yaml
    path = ws / "data/competition.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **keys}))


def test_latin1_bytes_name_the_line_and_the_encoding_key(ws):
    df = pd.read_csv(ws / "data/raw/train.csv")
    df.loc[3, "text"] = "un café, número uno"
    df.to_csv(ws / "data/raw/train.csv", index=False, encoding="latin-1")
    msg = run_prep(ws)
    assert "data/raw/train.csv: line 5: bytes b'\\xe9' not valid utf-8" in msg and "encoding: latin-1" in msg


def test_latin1_file_reads_with_the_encoding_key(ws):
    df = pd.read_csv(ws / "data/raw/train.csv")
    df.loc[3, "text"] = "un café, número uno"
    df.to_csv(ws / "data/raw/train.csv", index=False, encoding="latin-1")
    set_keys(ws, encoding="latin-1")
    assert prep_ok(ws)["text"].iloc[3] == "un café, número uno"


def test_unknown_encoding_is_a_config_error(ws):
    set_keys(ws, encoding="latin-9000")
    assert "data/competition.yaml: key 'encoding' is not an encoding Python knows" in run_prep(ws)


def test_utf8_byte_order_mark_is_dropped(ws):
    path = ws / "data/raw/train.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert prep_ok(ws)["id"].iloc[0] == "tr0"


def test_crlf_line_ends_and_quoted_newlines_read_as_rows(ws):
    df = pd.read_csv(ws / "data/raw/train.csv")
    df.loc[2, "text"] = "first line\nsecond line, with a comma"
    df.to_csv(ws / "data/raw/train.csv", index=False, lineterminator="\r\n")
    train = prep_ok(ws)
    assert len(train) == 120 and train["text"].iloc[2] == "first line second line, with a comma"
    assert not train["text"].str.contains("\r").any()


def test_header_only_test_file(ws):
    (ws / "data/raw/test.csv").write_text("id,text\n")
    assert "data/raw/test.csv: no data rows" in run_prep(ws)


def test_empty_id_in_test(ws):
    edit(ws / "data/raw/test.csv", lambda df: df.assign(id=df["id"].where(df.index != 6, "")))
    assert "data/raw/test.csv: row 8, column 'id': the value is empty" in run_prep(ws)


def test_single_class_train(ws):
    edit(ws / "data/raw/train.csv", lambda df: df.assign(label="pos"))
    assert "data/raw/train.csv: column 'label': every row has the label 'pos'" in run_prep(ws)


def test_sample_with_no_prediction_column(ws):
    edit(ws / "data/raw/sample_submission.csv", lambda df: df[["id"]])
    assert "data/raw/sample_submission.csv: no column beside 'id'" in run_prep(ws)


def test_sample_with_an_extra_column(ws):
    edit(ws / "data/raw/sample_submission.csv", lambda df: df.assign(Usage="Public"))
    msg = run_prep(ws)
    assert "data/raw/sample_submission.csv: columns label, Usage beside 'id'" in msg and "one column" in msg


def test_multilabel_row_with_no_labels(ws):
    write_multilabel(ws)
    edit(ws / "data/raw/train.csv", lambda df: df.assign(topics=df["topics"].where(df.index != 4, "  ")))
    assert "data/raw/train.csv: row 6, column 'topics': the row has no labels" in run_prep(ws)


def test_indicator_sample_missing_a_label_column(ws):
    labels = ["toxic", "insult"]
    edit(ws / "data/raw/train.csv", lambda df: df.assign(toxic=(df.index % 2).astype(str),
                                                          insult=(df.index % 3 == 0).astype(int).astype(str)))
    edit(ws / "data/raw/sample_submission.csv", lambda df: df[["id"]].assign(toxic=0.5))
    set_keys(ws, label=labels, task="multilabel", metric="micro_f1")
    assert "data/raw/sample_submission.csv: column 'insult' is missing" in run_prep(ws)


def test_yaml_syntax_error_names_the_line(ws):
    path = ws / "data/competition.yaml"
    path.write_text(path.read_text() + "text: [title, body\nlabel: x\n")
    msg = run_prep(ws)
    assert "data/competition.yaml: line 9, column 6: not valid YAML: expected ',' or ']'" in msg


def folds_main(ws):
    from foldstack import folds
    folds.main(["--competition=data/competition.yaml", "--train=data/processed/train.parquet",
                "--classes=data/processed/classes.json", "--out=folds/folds.csv"])


def test_class_with_fewer_rows_than_folds_is_one_warning_line(ws, capsys):
    edit(ws / "data/raw/train.csv", lambda df: df.assign(label=df["label"].where(df.index > 1, "rare")))
    prep_ok(ws)
    capsys.readouterr()
    folds_main(ws)
    err = capsys.readouterr().err.strip()
    print(err)
    assert err == ("warning: data/raw/train.csv: column 'label': 1 class(es) have fewer rows than n_folds=3, so "
                   "some folds never validate them: 'rare' (2)")
    assert len(pd.read_csv(ws / "folds/folds.csv")) == 120  # every row still has its one fold


def test_group_column_that_cannot_fill_the_folds(ws):
    edit(ws / "data/raw/train.csv", lambda df: df.assign(author=["a", "b"] * 60))
    set_keys(ws, group="author")
    prep_ok(ws)
    with pytest.raises(SystemExit, match="data/raw/train.csv: column 'author': 2 distinct groups cannot fill "
                                         "n_folds=3 folds") as exc:
        folds_main(ws)
    print(exc.value)


def test_typo_and_negative_lr_in_a_model_yaml(tmp_path):
    from foldstack import config
    path = tmp_path / "m.yaml"
    path.write_text("kind: transformer\nlearnig_rate: 2e-5\n")
    with pytest.raises(config.ConfigError, match=r"m\.yaml: unknown key 'learnig_rate'") as exc:
        config.load(config.Model, path)
    print(exc.value)
    path.write_text("kind: transformer\nlr: -2e-5\n")
    with pytest.raises(config.ConfigError, match=r"m\.yaml: key 'lr' must be a positive learning rate") as exc:
        config.load(config.Model, path)
    print(exc.value)


def test_hub_id_without_the_hub_fails_fast_with_a_hint(monkeypatch, tmp_path):
    """No network is touched: the reachability probe is replaced, as the Hub is unreachable here anyway."""
    import time
    from foldstack import config, encoder
    monkeypatch.setattr(encoder, "hub_reachable", lambda: False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    cfg = config.Model(backbone="no-such-org/no-such-model")
    start = time.perf_counter()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(config.ConfigError, match="key 'backbone': backbone 'no-such-org/no-such-model' is not an "
                                                 "alias .* cannot be reached: download it") as exc:
        encoder.fits_backbone(cfg)
    print(exc.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(config.ConfigError, match="HF_HUB_OFFLINE=1 forbids the Hub: download it") as exc:
        encoder.fits_backbone(cfg)
    print(exc.value)
    assert time.perf_counter() - start < 20  # a hang guard, not a speed target


def test_a_backbone_that_will_not_load_is_one_config_line(tmp_path, monkeypatch):
    """Where the Hub answers, resolve_backbone passes a Hub id through and transformers raises OSError for one it
    does not have (simulated by a folder without config.json): one ConfigError line, not a traceback."""
    from foldstack import config, encoder
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(encoder, "resolve_backbone", lambda name: str(tmp_path / "empty"))
    with pytest.raises(config.ConfigError, match="^key 'backbone': ") as exc:
        encoder.fits_backbone(config.Model(backbone="someone/typo-model"))
    assert "\n" not in str(exc.value)


def test_max_len_beyond_the_backbone_stops_train_in_one_line(ws, tiny_bert):
    prep_ok(ws)
    folds_main(ws)
    (ws / "m.yaml").write_text(f"backbone: {tiny_bert}\nmax_len: 512\n")
    from foldstack import train
    with pytest.raises(SystemExit) as exc:
        train.main(["--model=m.yaml", "--fold=0", "--out-dir=folds/m"])
    print(exc.value.code)
    assert str(exc.value.code) == f"error: m.yaml: key 'max_len': 512 exceeds the 128 positions of backbone " \
                                  f"'{tiny_bert}'"


def test_embed_lr_backbone_is_checked_before_train_reads_data(ws, tiny_bert):
    (ws / "m.yaml").write_text(f"kind: embed_lr\nparams:\n  backbone: {tiny_bert}\n  max_len: 512\n")
    from foldstack import train
    with pytest.raises(SystemExit) as exc:  # no prep has run: the check comes before any data is read
        train.main(["--model=m.yaml", "--fold=0", "--out-dir=folds/m"])
    print(exc.value.code)
    assert str(exc.value.code) == f"error: m.yaml: key 'params.max_len': 512 exceeds the 128 positions of " \
                                  f"backbone '{tiny_bert}'"


def test_solution_label_unseen_in_training_is_a_miss(ws, capsys):
    from foldstack import config, score
    comp = config.load(config.Competition, ws / "data/competition.yaml")
    sol = pd.DataFrame({"id": ["te0", "te1", "te2", "te3"], "label": ["neg", "pos", "new", "neg"]})
    sub = pd.DataFrame({"id": ["te0", "te1", "te2", "te3"], "label": ["neg", "pos", "pos", "pos"]})
    sol.to_csv(ws / "sol.csv", index=False)
    sub.to_csv(ws / "sub.csv", index=False)
    assert score.score_files(ws / "sub.csv", ws / "sol.csv", comp, ["neg", "neu", "pos"]) == 0.5
    err = capsys.readouterr().err
    print(err)
    assert "1 label(s) never seen in training (new): scored as misses" in err


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS"])
def test_disk_full_or_read_only_output_keeps_the_old_artefact(ws, monkeypatch, code):
    import errno
    import os
    prep_ok(ws)
    before = (ws / "data/processed/train.parquet").read_bytes()
    edit(ws / "data/raw/train.csv", lambda df: df.assign(text=df["text"] + " more"))
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("train.parquet"):
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", failing_replace)
    msg = run_prep(ws)
    assert "data/processed/train.parquet: cannot write (" in msg and "unchanged" in msg
    assert (ws / "data/processed/train.parquet").read_bytes() == before
    assert not [p for p in (ws / "data/processed").iterdir() if p.name.startswith(".")], "no temp files left"


def test_model_yaml_edited_while_its_folds_trained(tmp_path):
    from foldstack import config, gather
    (tmp_path / "m.yaml").write_text("kind: tfidf_lr\n")
    now = config.config_hash(config.load(config.Model, tmp_path / "m.yaml"))
    summaries = [{"fold": 0, "config_hash": now}, {"fold": 1, "config_hash": "0123456789ab"}]
    with pytest.raises(gather.InputError, match=r"fold1\.json: trained from another version of .*m\.yaml than it "
                                                r"is now \(edited while the folds trained\?\)") as exc:
        gather.check_same_config(summaries, tmp_path, now, tmp_path / "m.yaml")
    print(exc.value)
    gather.check_same_config(summaries[:1], tmp_path, now, tmp_path / "m.yaml")  # one version: passes


def test_the_suite_cannot_reach_the_network():
    """conftest's guard: a test that would need a registry or the Hub fails at once instead of passing online."""
    import urllib.request
    with pytest.raises(OSError, match="must not use the network") as exc:
        urllib.request.urlopen("https://pypi.org/simple/", timeout=5)
    print(exc.value)
