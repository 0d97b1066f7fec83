"""The token-length report's recommendation: coverage first, then the time budget, head_tail for long texts."""
import numpy as np

from foldstack import lengths


def test_short_texts_get_a_short_max_len_and_head_truncation():
    rec = lengths.recommend(np.full(1000, 30), n_folds=5, epochs=2, budget_min=60)
    assert rec["max_len"] == 64 and rec["truncation"] == "head" and rec["cut_share"] == 0


def test_long_texts_get_head_tail_and_the_budget_caps_max_len():
    long = np.full(1000, 900)
    assert lengths.recommend(long, 5, 2, budget_min=1e9) == {**lengths.recommend(long, 5, 2, 1e9), "max_len": 512}
    tight = lengths.recommend(long, 5, 2, budget_min=1.0)
    assert tight["truncation"] == "head_tail" and tight["max_len"] < 512
    assert tight["max_len"] == 64 or tight["est_minutes"] <= 1.0


def test_counts_special_tokens_and_cuts_nothing(tiny_bert):
    from foldstack.encoder import load_tokenizer
    tok = load_tokenizer(str(tiny_bert))
    n = lengths.token_lengths(["movie " * 200, "film"], tok)
    assert n[0] > 200 and n[1] == 3
