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


def test_the_estimate_follows_frozen_layers_width_and_bf16():
    base = lengths.Speed()
    assert lengths.Speed().tokens_per_s() == lengths.TOKENS_PER_S  # the measured MiniLM-L6 fp32 rate
    assert lengths.Speed(frozen=2).tokens_per_s() > base.tokens_per_s()
    assert [lengths.bf16_kind(f) for f in ({"avx512_bf16", "amx_bf16"}, {"avx512_bf16"}, None)] == \
        ["AMX", "AVX512-BF16", "AVX512-BF16"]  # flags unreadable: the lower rate
    amx, avx512 = lengths.Speed(bf16="AMX"), lengths.Speed(bf16="AVX512-BF16")
    assert amx.tokens_per_s() == base.tokens_per_s() * lengths.BF16_SPEEDUP["AMX"]
    assert base.tokens_per_s() < avx512.tokens_per_s() < amx.tokens_per_s()  # bf16 without AMX: between the two
    assert lengths.Speed(layers=12, width=768, ffn=3072).tokens_per_s() < base.tokens_per_s() / 7  # BERT-base
    long = np.full(1000, 900)
    slow, fast = (lengths.recommend(long, 5, 2, 30.0, speed=s) for s in (base, lengths.Speed(frozen=4, bf16="AMX")))
    assert fast["est_minutes"] < slow["est_minutes"] and fast["max_len"] >= slow["max_len"]


def test_one_recommendation_per_transformer_yaml(tmp_path, tiny_bert):
    (tmp_path / "deep.yaml").write_text(f"backbone: {tiny_bert}\nfreeze_layers: 99\namp: 'off'\nepochs: 3\n")
    (tmp_path / "svm.yaml").write_text("kind: tfidf_svm\n")
    cfgs = lengths.transformers_in([str(tmp_path / "deep.yaml"), str(tmp_path / "svm.yaml")])
    assert list(cfgs) == ["deep"]
    speed = lengths.model_speed(cfgs["deep"])
    assert speed.frozen == speed.layers and not speed.bf16  # capped at the backbone's layers; amp off is fp32
    assert list(lengths.transformers_in([str(tmp_path / "svm.yaml")])) == ["a MiniLM member"]


def test_prep_reports_a_pretrain_backbone_before_make_pretrain_writes_it(tmp_path, monkeypatch, tiny_bert):
    """`make prep` runs before `make pretrain`: a model whose backbone is models/pretrain/<name> is counted with
    the tokenizer of the backbone that pretraining continues; a max_len too long for the backbone is still reported;
    a backbone that is nowhere is one line naming the YAML it is written in, no traceback."""
    import json

    import pandas as pd
    import pytest
    from foldstack import config
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models/pretrain").mkdir(parents=True)
    (tmp_path / "models/pretrain/mlm.yaml").write_text(f"backbone: {tiny_bert}\n")
    (tmp_path / "models/deep.yaml").write_text("backbone: models/pretrain/mlm\nmax_len: 4096\namp: 'off'\n")
    pd.DataFrame({"text": ["movie night", "a film " * 40]}).to_parquet(tmp_path / "train.parquet")
    lengths.main(["--train=train.parquet", "--out=lengths.json", "--models", "models/deep.yaml"])
    report = json.loads((tmp_path / "lengths.json").read_text())["deep"]
    assert (report["backbone"], report["counted_with"]) == ("models/pretrain/mlm", str(tiny_bert))
    assert config.shape_source("models/pretrain/mlm/") == str(tiny_bert)
    (tmp_path / "models/pretrain/mlm").mkdir()  # written by `make pretrain`: from then on read as itself
    assert config.shape_source("models/pretrain/mlm") == "models/pretrain/mlm"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "models/gone.yaml").write_text("backbone: nobody/no-such-model\n")
    (tmp_path / "models/pretrain/bad.yaml").write_text("backbone: nobody/no-such-model\n")
    (tmp_path / "models/via.yaml").write_text("backbone: models/pretrain/bad\n")
    for model, where in (("gone", "models/gone.yaml"), ("via", "models/pretrain/bad.yaml")):
        with pytest.raises(SystemExit) as exit_:
            lengths.main(["--train=train.parquet", "--out=lengths.json", "--models", f"models/{model}.yaml"])
        assert str(exit_.value).startswith(f"error: {where}"), str(exit_.value)
        assert "key 'backbone': backbone 'nobody/no-such-model'" in str(exit_.value)
        assert "\n" not in str(exit_.value)
