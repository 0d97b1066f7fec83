"""Augmentation stage: EDA operations, back-translation (apertium, marian, fakes), cache, resume, fold safety."""
import random
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from foldstack import augment, backtrans, config, eda
from foldstack import train as train_stage
from foldstack.io import read_augmented
from foldstack.text import FIELD_SEP
from tests.conftest import write_competition

TEXT = "The brilliant director shot a boring film , and the actors hated the slow script (really) ."
CFG = augment.Eda()


def words(text: str) -> list[str]:
    return text.split()


# ---- EDA -----------------------------------------------------------------------------------------------------

def test_synonyms_are_those_of_nltks_wordnet_synsets():
    """synonyms() reads lemma names without NLTK's synset parser: same names, same order, for inflected forms,
    adjectives with syntactic markers, multi-word lemmas and words WordNet lacks."""
    from nltk.corpus import wordnet

    def reference(word):
        names = (lem.name().replace("_", " ").lower() for syn in wordnet.synsets(word) for lem in syn.lemmas())
        return tuple(n for n in dict.fromkeys(names) if n != word)

    vocab = ("cars running better went geese brilliant galore elect united states happily film shot boring "
             "xyzzy data mice ran flew teeth").split()
    assert all(eda.synonyms(w) == reference(w) for w in vocab)
    assert eda.synonyms("galore") == ("abounding",)  # WordNet stores 'galore(ip)': the marker is stripped
    assert all("(" not in n for w in vocab for n in eda.synonyms(w))


def test_synonym_replacement_swaps_non_stopwords_for_wordnet_synonyms():
    tokens = words("The film was a film , truly awful (film) .")
    out = eda.synonym_replacement(tokens, 1, random.Random(0))
    changed = [(a, b) for a, b in zip(tokens, out) if a != b]
    assert len(out) == len(tokens) and changed
    olds = {eda.WORD.match(a)[2].lower() for a, _ in changed}
    assert len(olds) == 1, "n=1: one distinct word replaced (every occurrence, as the paper)"
    old = olds.pop()
    assert old not in eda.stopwords()
    for a, b in changed:
        pre, core, post = eda.WORD.match(a).groups()
        assert b.startswith(pre) and b.endswith(post), "punctuation around the word is kept"
        assert b[len(pre):len(b) - len(post)].lower() in eda.synonyms(old)
    only_stopwords = words("it is what it is and we were there")
    assert eda.synonym_replacement(only_stopwords, 3, random.Random(0)) == only_stopwords


def test_random_insertion_inserts_synonyms_of_words_in_the_text():
    tokens = words(TEXT)
    out = eda.random_insertion(tokens, 2, random.Random(1))
    assert len(out) == len(tokens) + 2
    rest = list(out)
    for tok in tokens:  # the original tokens, in order, plus two insertions
        rest.remove(tok)
    pool = {s for t in tokens if (m := eda.WORD.match(t)) for s in eda.synonyms(m[2].lower())
            if m[2].lower() not in eda.stopwords()}
    assert len(rest) == 2 and all(r in pool for r in rest), rest


def test_swap_and_deletion_change_order_or_drop_words_only():
    n = max(1, int(0.2 * len(words(TEXT))))
    swapped = eda.apply_op("rs", TEXT, 0.2, seed=3)
    assert swapped != TEXT and sorted(w.lower() for w in words(swapped)) == sorted(w.lower() for w in words(TEXT))
    deleted = words(eda.apply_op("rd", TEXT, 0.2, seed=3))
    assert len(deleted) == len(words(TEXT)) - n
    it = iter(w.lower() for w in words(TEXT))
    assert all(any(w.lower() == x for x in it) for w in deleted), "deletion keeps the order of what remains"


def test_eda_is_seeded_cycles_operations_and_keeps_field_separators():
    text = f"Great movie , brilliant actors {FIELD_SEP} A boring slow script and awful music {FIELD_SEP}"
    cfg = augment.Eda(n_aug=4)
    first = eda.augment_text(text, "r1", cfg)
    assert first == eda.augment_text(text, "r1", cfg), "same seed and id -> same copies"
    assert first != eda.augment_text(text, "r1", augment.Eda(n_aug=4, seed=7))
    assert sorted(op for op, _ in first) == sorted(eda.OPS), "4 copies: each operation once"
    for op, aug in first:
        fields = aug.split(f" {FIELD_SEP} ")
        assert aug.count(FIELD_SEP) == 2 and len(fields) == 3 and fields[2] == "", (op, aug)
        assert aug != text
    only_sr = eda.augment_text(text, "r1", augment.Eda(alpha_ri=0, alpha_rs=0, alpha_rd=0, n_aug=2))
    assert [op for op, _ in only_sr] == ["sr", "sr"]
    assert eda.augment_text("   ", "r2", cfg) == []


def test_eda_does_not_depend_on_workers_or_chunks():
    texts = [TEXT, "Slow boring film", "", "A funny brilliant story about a robot"] * 3
    ids = [f"r{i}" for i in range(len(texts))]
    one = eda.augment_texts(ids, texts, CFG, workers=1)
    assert one == eda.augment_texts(ids, texts, CFG, workers=2, chunk=3)
    assert [pos for pos, _, _ in one] == [i for i, t in enumerate(texts) if t]


# ---- back-translation: segmenting and engines ---------------------------------------------------------------

class Bracket:
    """A fake engine: wraps each line so that misplaced segments would show."""
    def __init__(self):
        self.batches = []

    def backtranslate(self, lines):
        self.batches.append(list(lines))
        return [f"<{line}>" for line in lines]


ODD = ["First sentence. Second one! Third?", "", f"Title here {FIELD_SEP} Body line one.\nBody line two.\n\nEnd.",
       "word " * 300 + "end.", "Brackets [x] ^caret$ @at # 😀 http://x.com/a?b=c", "carriage\rreturn\u2028sep"]


def test_segments_are_single_lines_and_rejoin_in_place():
    engine = Bracket()
    out = backtrans.backtranslate_texts(ODD, engine, max_chars=100)
    lines = engine.batches[0]
    assert all("\n" not in s and "\r" not in s and len(s) <= 100 for s in lines)
    assert out[0] == "<First sentence.> <Second one!> <Third?>"
    assert out[1] == ""
    assert out[2] == f"<Title here> {FIELD_SEP} <Body line one.>\n<Body line two.>\n\n<End.>"
    assert out[3].count("<") > 10 and out[3].replace("<", "").replace(">", "") == ("word " * 300 + "end.").strip()
    assert out[5].count("\n") == 0
    ident = type("Identity", (), {"backtranslate": lambda self, lines: lines})()
    kept = ODD[:3] + ['He said "Stop." Then (he left.) Fine!']
    assert backtrans.backtranslate_texts(kept, ident, 500) == kept


def test_apertium_pipe_checks_line_counts_and_bisects_a_misaligned_batch(capsys):
    lines = ["a", "b", "c", "d", "e"]
    assert backtrans.Apertium(commands=[["cat"], ["tr", "a-z", "A-Z"]]).backtranslate(lines) == list("ABCDE")
    many = [f"line {i} " + "x" * 100 for i in range(3000)]  # ~300 KiB: more than a pipe buffer holds
    assert backtrans.Apertium(commands=[["cat"], ["cat"]]).pipe(many) == many
    drops_second = backtrans.Apertium(commands=[["sed", "2d"]])
    with pytest.raises(backtrans.AlignmentError, match="5 lines in, 4 lines out"):
        drops_second.pipe(lines)
    assert drops_second.backtranslate(lines) == lines, "bisection isolates lines until the counts agree"
    assert "bisecting" in capsys.readouterr().err
    with pytest.raises(backtrans.AlignmentError, match="one line"):
        backtrans.Apertium(commands=[["sed", "$d"]]).backtranslate(lines)
    with pytest.raises(RuntimeError, match="failed"):
        backtrans.Apertium(commands=[["sh", "-c", "echo broken >&2; exit 3"]]).pipe(lines)


@pytest.mark.skipif(shutil.which("apertium") is None, reason="apertium not installed (the fakes above cover the logic)")
def test_apertium_keeps_alignment_on_odd_input():
    texts = ODD + [" ".join(f"The {i}th cat sat on the mat." for i in range(60))]
    out = backtrans.backtranslate_texts(texts, backtrans.Apertium(), max_chars=100)
    assert len(out) == len(texts) and out[1] == ""
    assert out[2].count(FIELD_SEP) == 1 and out[2].count("\n") == 3
    assert out[0] != texts[0] and out[0].startswith("First sentence.") and out[0].endswith("Third?")
    assert [int(w[:-2]) for w in out[-1].split() if w[:-2].isdigit()] == list(range(60)), "sentences in order"
    assert out[-1] != texts[-1]


def test_missing_apertium_stops_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(backtrans.shutil, "which", lambda name: None)
    with pytest.raises(backtrans.EngineMissing, match="apt-get install apertium apertium-eng-spa"):
        backtrans.Apertium()
    train = tmp_path / "train.parquet"
    pd.DataFrame({"id": ["a"], "text": ["Hello."], "text_lemma": ["hello ."], "label": [0]}).to_parquet(train)
    with pytest.raises(SystemExit) as exc:
        augment.main(["--set=backtrans", f"--train={train}", f"--out={tmp_path / 'bt.parquet'}",
                      f"--config={augment_yaml(tmp_path)}"])
    msg = str(exc.value)
    assert msg.startswith("error:") and "\n" not in msg and "apt-get install apertium apertium-eng-spa" in msg


def test_marian_engine_batches_in_length_order_and_restores_order(tmp_path):
    pytest.importorskip("transformers")
    path = tiny_marian(tmp_path / "marian")
    engine = backtrans.Marian(str(path), str(path), batch_size=2, max_length=16)
    lines = ["the film", "a very long and boring film about a robot", "story", "the slow music and the script"]
    out = engine.backtranslate(lines)  # random weights: any strings, one per line
    assert len(out) == 4 and all(isinstance(s, str) and "\n" not in s for s in out)
    calls = []
    for _, model in engine.models:  # an echoing model shows where each line's output lands
        model.generate = lambda input_ids, attention_mask, **kw: calls.append(len(input_ids)) or input_ids
    assert engine.backtranslate(lines) == lines
    assert calls == [2, 2, 2, 2], "2 models x 2 batches of batch_size 2"


def tiny_marian(path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["the film a very long and boring about robot story slow music script"] * 3,
                            trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(path)
    cfg = MarianConfig(vocab_size=tok.get_vocab_size(), d_model=16, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                       max_position_embeddings=64, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    MarianMTModel(cfg).save_pretrained(path)
    return path


# ---- the stage: config, cache, resume ------------------------------------------------------------------------

def augment_yaml(tmp_path, **sections):
    path = tmp_path / "augment.yaml"
    path.write_text(yaml.safe_dump(sections or {"eda": {"n_aug": 1}}))
    return path


def test_config_errors_name_the_file_and_key(tmp_path):
    assert augment.load_config("features/augment.yaml", "eda") == augment.Eda()  # the tracked file = defaults
    assert augment.load_config("features/augment.yaml", "backtrans") == augment.Backtrans()
    for sections, key in [({"eda": {"alpha_x": 1}}, "eda.alpha_x"), ({"edda": {}}, "edda"),
                          ({"eda": {"alpha_sr": 2.0}}, "eda.alpha_sr"), ({"backtrans": {"engine": "x"}},
                                                                          "backtrans.engine")]:
        path = augment_yaml(tmp_path, **sections)
        with pytest.raises(config.ConfigError) as err:
            augment.load_config(path, "backtrans" if "backtrans" in sections else "eda")
        assert str(path) in str(err.value) and key in str(err.value) and "\n" not in str(err.value)


def small_train(n=12):
    texts = [f"The brilliant film number {i} had a boring slow script and funny actors ." for i in range(n)]
    texts[3] = ""
    texts[5] = f"Great title {FIELD_SEP} A slow story about a robot"
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": texts, "text_lemma": texts,
                         "label": np.arange(n) % 3})


def test_eda_output_is_cached_by_config_and_data(tmp_path):
    train, out = small_train(), tmp_path / "eda.parquet"
    assert augment.run("eda", augment.Eda(n_aug=2), train, out, workers=1)
    df = pd.read_parquet(out)
    assert list(df.columns) == ["src_id", "kind", "text", "text_lemma", "label"]
    assert "r3" not in set(df["src_id"]) and df["kind"].str.startswith("eda:").all()
    src = train.set_index("id")
    assert (df["label"].to_numpy() == src.loc[df["src_id"], "label"].to_numpy()).all()
    assert (df["text"].to_numpy() != src.loc[df["src_id"], "text"].to_numpy()).all()
    assert df.loc[df["src_id"] == "r5", "text"].str.count(FIELD_SEP).eq(1).all()
    assert df["text_lemma"].str.len().gt(0).all() and (df["text_lemma"] == df["text_lemma"].str.lower()).all()
    stamp = out.stat().st_mtime_ns
    assert not augment.run("eda", augment.Eda(n_aug=2), train, out, workers=1), "same config + data: nothing"
    assert out.stat().st_mtime_ns == stamp
    assert augment.run("eda", augment.Eda(n_aug=1), train, out, workers=1), "config changed"
    train.loc[0, "text"] = "A new text about music"
    assert augment.run("eda", augment.Eda(n_aug=1), train, out, workers=1), "data changed"
    multi = small_train().drop(columns="label").assign(labels=[[0, 2]] * 12)
    assert augment.run("eda", augment.Eda(), multi, out, workers=1)
    assert all(list(v) == [0, 2] for v in pd.read_parquet(out)["labels"])


class Flaky:
    """Upper-cases lines; raises on its `fail_on`-th call (an interruption)."""
    def __init__(self, fail_on=None):
        self.calls, self.lines, self.fail_on = 0, 0, fail_on

    def backtranslate(self, lines):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        self.lines += len(lines)
        return [line.upper() for line in lines]


def test_backtranslation_resumes_at_the_first_unfinished_chunk(tmp_path, monkeypatch):
    train, out = small_train(7), tmp_path / "backtrans.parquet"
    cfg = augment.Backtrans(chunk_size=3)
    flaky = Flaky(fail_on=2)
    monkeypatch.setattr(backtrans, "make_engine", lambda cfg: flaky)
    with pytest.raises(KeyboardInterrupt):
        augment.run("backtrans", cfg, train, out, workers=1)
    parts = tmp_path / "backtrans.parts"
    assert len(list(parts.glob("*.parquet"))) == 1 and not out.exists(), "chunk 1 kept, no output yet"
    again = Flaky()
    monkeypatch.setattr(backtrans, "make_engine", lambda cfg: again)
    assert augment.run("backtrans", cfg, train, out, workers=1)
    assert again.calls == 2, "only chunks 2 and 3 were translated again"
    df = pd.read_parquet(out)
    assert df["kind"].eq("backtrans:apertium").all() and not parts.exists()
    assert (df["text"] == train.set_index("id").loc[df["src_id"], "text"].str.upper().to_numpy()).all()
    assert "r3" not in set(df["src_id"]), "an empty text has no back-translation"

    def never(cfg):
        raise AssertionError("the engine must not start when the output is up to date")
    monkeypatch.setattr(backtrans, "make_engine", never)
    assert not augment.run("backtrans", cfg, train, out, workers=1)


# ---- fold safety with a real features/eda.parquet ------------------------------------------------------------

def test_run_fold_uses_only_copies_of_training_side_rows_from_the_stage_output(tmp_path, monkeypatch, captured_fit):
    from foldstack import prep
    ws = write_competition(tmp_path, n_train=30, n_test=6)
    monkeypatch.chdir(ws)
    prep.main(["--competition=data/competition.yaml", "--out-dir=data/processed", "--workers=1"])
    train, test = pd.read_parquet("data/processed/train.parquet"), pd.read_parquet("data/processed/test.parquet")
    assert augment.run("eda", augment.Eda(n_aug=2), train, ws / "features" / "eda.parquet", workers=1)
    extra = read_augmented(("eda",), ws / "features")
    assert len(extra) > 30 and set(extra["src_id"]) <= set(train["id"])
    fold_of, captured = np.arange(len(train)) % 3, captured_fit

    label_of = dict(zip(train["id"], train["label"]))
    for column in ("raw", "lemma"):
        cfg, col = config.Model(augment=("eda",), text=column), "text" if column == "raw" else "text_lemma"
        for fold in range(3):
            train_stage.run_fold(cfg, config.Competition(n_folds=3), train, test, fold_of, fold, 3, None, extra)
            val_ids = set(train["id"][fold_of == fold])
            allowed = extra[~extra["src_id"].isin(val_ids)]
            texts, ys = captured["texts"]["train"], captured["ys"]["train"]
            assert texts[(fold_of != fold).sum():] == allowed[col].tolist(), "exactly the training side's copies"
            assert list(ys[(fold_of != fold).sum():]) == [label_of[s] for s in allowed["src_id"]]
            assert captured["texts"]["val"] == train[col][fold_of == fold].tolist(), "validation: originals only"
