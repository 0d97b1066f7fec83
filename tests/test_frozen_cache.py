"""freeze_layers and the frozen-layer cache: what is frozen never trains, the cache is keyed by everything it depends
on, and training from the cache is training the same frozen model end to end."""
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from foldstack import trainer
from foldstack.batching import collate, encode
from foldstack.encoder import build_model, load_tokenizer
from foldstack.hidden_cache import open_or_build, unique_texts
from foldstack.optim import param_groups
from tests.conftest import ROOT, corpus
from tests.test_model_and_training import cfg_for


def test_frozen_parameters_get_no_gradient_and_no_group(tiny_backbone):
    model = build_model(cfg_for(tiny_backbone, freeze_layers=1), n_out=3)
    groups = param_groups(model, lr=1e-3, layer_decay=0.5, head_lr=1e-2, weight_decay=0.01)
    grouped = {id(p) for g in groups for p in g["params"]}
    frozen = list(model.lower.parameters())
    assert frozen and not any(p.requires_grad for p in frozen)
    assert not grouped & {id(p) for p in frozen}, "a frozen parameter is in an optimizer group"
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}
    # the remaining top layer keeps its original depth: layer 1 of 2 is the top (depth 0, lr 1e-3)
    assert {g["name"] for g in groups if g["name"].startswith("encoder")} == {"encoder_depth0", "encoder_depth0_nodecay"}
    tok = load_tokenizer(str(tiny_backbone))
    batch = collate(encode(tok, corpus(4)[0], 32, "head"), tok.pad_token_id, 32)
    model.train()
    model(**batch).sum().backward()
    assert all(p.grad is None for p in frozen)
    assert not model.lower.training, "the frozen part must run without dropout, as the cache was built"


def test_frozen_model_equals_the_unfrozen_model_with_the_same_weights(tiny_bert):
    cfg = cfg_for(tiny_bert, head="mean")
    torch.manual_seed(0)
    full = build_model(cfg, 3).eval()
    frozen = build_model(replace(cfg, freeze_layers=1), 3).eval()
    frozen.out.load_state_dict(full.out.state_dict())
    tok = load_tokenizer(str(tiny_bert))
    batch = collate(encode(tok, corpus(6)[0], 32, "head"), tok.pad_token_id, 32)
    with torch.no_grad():
        torch.testing.assert_close(frozen(**batch), full(**batch), atol=1e-5, rtol=1e-5)
        hidden = frozen.lower_hidden(**batch)
        torch.testing.assert_close(frozen(hidden=hidden, attention_mask=batch["attention_mask"]), full(**batch),
                                   atol=1e-5, rtol=1e-5)


def test_freeze_layers_beyond_the_backbone_is_refused(tiny_bert):
    with pytest.raises(ValueError, match="key .freeze_layers.: 3 exceeds the 2 layers"):
        build_model(cfg_for(tiny_bert, freeze_layers=3), 3)


def test_a_fold_trained_from_the_cache_equals_the_frozen_model_end_to_end(tiny_backbone, tmp_path):
    cfg = cfg_for(tiny_backbone, freeze_layers=1, epochs=2, dropout=0.0)
    texts, y = corpus(64, seed=5)
    tok = load_tokenizer(str(tiny_backbone))
    cache = open_or_build(cfg, unique_texts(texts), tmp_path / "cache", 3)
    parts = {"train": slice(0, 40), "val": slice(40, 56), "test": slice(56, 64)}
    results = []
    for rows_of in (lambda t: encode(tok, t, cfg.max_len, cfg.truncation), cache.rows):
        rows = {p: rows_of(texts[s]) for p, s in parts.items()}
        data = trainer.FoldData(rows["train"], y[parts["train"]], rows["val"], y[parts["val"]], rows["test"])
        torch.manual_seed(7)
        model = build_model(cfg, 3)
        results.append(trainer.fit(model, data, cfg, "accuracy", False, tok.pad_token_id, tmp_path / "f.log", 7))
    end_to_end, cached = results
    # the cache stores float16: predictions agree to about 1e-3
    np.testing.assert_allclose(cached["val"], end_to_end["val"], atol=5e-3)
    np.testing.assert_allclose(cached["test"], end_to_end["test"], atol=5e-3)


def test_every_change_of_key_builds_a_new_cache_and_an_equal_key_reuses_it(tiny_bert, tmp_path):
    texts = unique_texts(corpus(20, seed=2)[0])
    cfg = cfg_for(tiny_bert, freeze_layers=1)
    first = open_or_build(cfg, texts, tmp_path, 3)
    stamp = (first.path / "hidden.npy").stat().st_mtime_ns
    assert open_or_build(cfg, texts, tmp_path, 3).path == first.path
    assert (first.path / "hidden.npy").stat().st_mtime_ns == stamp, "an equal key recomputed"
    changes = [dict(max_len=16), dict(truncation="tail"), dict(text="lemma"), dict(freeze_layers=2),
               dict(attention="eager")]
    paths = {first.path} | {open_or_build(replace(cfg, **c), texts, tmp_path, 3).path for c in changes}
    paths.add(open_or_build(cfg, texts[:-1] + [texts[-1] + " again"], tmp_path, 3).path)
    assert len(paths) == len(changes) + 2, "two different keys share a cache"


def test_a_changed_backbone_directory_is_a_new_key(tmp_path):
    from tests.conftest import make_tiny_bert
    backbone = make_tiny_bert(tmp_path / "bb")
    texts = unique_texts(corpus(10, seed=2)[0])
    cfg = cfg_for(backbone, freeze_layers=1)
    before = open_or_build(cfg, texts, tmp_path / "cache", 3).path
    from transformers import BertModel
    model = BertModel.from_pretrained(backbone)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.add_(0.1)  # as `make pretrain` would change the weights
    model.save_pretrained(backbone)
    after = open_or_build(cfg, texts, tmp_path / "cache", 3)
    assert after.path != before
    assert not np.array_equal(np.asarray(after.hidden), np.load(before / "hidden.npy"))


def test_cache_rows_batch_like_collate(tiny_bert, tmp_path):
    texts = unique_texts(corpus(12, seed=4)[0])
    cfg = cfg_for(tiny_bert, freeze_layers=2)
    cache = open_or_build(cfg, texts, tmp_path, 3)
    tok = load_tokenizer(str(tiny_bert))
    seqs = encode(tok, texts, cfg.max_len, cfg.truncation)
    rows = cache.rows(texts[::-1])
    assert list(rows.lengths) == [len(s) for s in seqs[::-1]]
    assert isinstance(cache.hidden, np.memmap), "the cache must be read memory-mapped"
    batch = rows.batch(np.array([0, 3]))
    ref = collate([seqs[::-1][0], seqs[::-1][3]], tok.pad_token_id, cfg.max_len)
    assert torch.equal(batch["attention_mask"], ref["attention_mask"])


def test_seeds_are_averaged_inside_the_fold(tiny_bert, tmp_path, monkeypatch):
    from foldstack import config, train
    seen = []

    def fake_fit(cfg, comp, texts, ys, n_classes, log_path, seed, cache=None):
        seen.append(seed)
        p = np.full((len(texts["val"]), n_classes), 1.0 / n_classes, dtype=np.float32)
        p[:, seed % n_classes] += 1
        return {"val": p / p.sum(1, keepdims=True), "test": np.zeros((len(texts["test"]), n_classes)),
                "score": 0.0, "history": []}
    monkeypatch.setattr(train, "fit_transformer", fake_fit)
    import pandas as pd
    texts, y = corpus(30)
    df = pd.DataFrame({"id": [str(i) for i in range(30)], "text": texts, "text_lemma": texts, "label": y})
    fold_of = np.arange(30) % 3
    cfg = config.Model(seeds=(10, 11, 12))
    _, res = train.run_fold(cfg, config.Competition(), df, df.head(5), fold_of, 1, 3, tmp_path / "f.log")
    assert seen == [11, 12, 13], "each seed offset by the fold, as a single seed is"
    np.testing.assert_allclose(res["val"].sum(1), 1.0, rtol=1e-6)
    assert len(res["seed_scores"]) == 3 and np.allclose(res["val"], res["val"][0])


def test_bf16_autocast_only_where_the_cpu_has_native_bf16():
    assert trainer.cpu_has_bf16("processor: 0\nflags : fpu sse avx2 avx512f avx512_bf16\n", "AVX512")
    assert trainer.cpu_has_bf16("flags : fpu amx_bf16 amx_tile\n", "AVX512")
    assert not trainer.cpu_has_bf16("flags : fpu sse avx2 avx512f avx512_vnni\n", "AVX512"), "emulated bf16 is slower"
    assert not trainer.cpu_has_bf16("flags : fpu avx2 avx512f amx_bf16\n", "AVX2"), "torch capped at AVX2"


def test_make_cpu_isa_avx2_runs_every_recipe_as_an_avx2_only_cpu(tmp_path):
    """`make CPU_ISA=avx2` caps torch, MKL and oneDNN at AVX2 in every recipe, and `amp: auto` then trains in fp32
    even on a bf16 CPU (the slow kind, reproducible on a fast machine); an unknown CPU_ISA stops Make."""
    probe = ("probe: ; @echo $$ATEN_CPU_CAPABILITY $$MKL_ENABLE_INSTRUCTIONS $$ONEDNN_MAX_CPU_ISA; "
             f"{sys.executable} -c \"import torch; from foldstack import trainer; "
             "print(torch.backends.cpu.get_cpu_capability(), trainer.amp_dtype('auto', torch.device('cpu')))\"")
    cmd = ["make", "-s", "-f", str(ROOT / "Makefile"), "VENV=/nonexistent", "--eval", probe, "probe"]
    done = subprocess.run([*cmd, "CPU_ISA=avx2"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["avx2", "AVX2", "AVX2", "AVX2", "None"]
    bad = subprocess.run([*cmd, "CPU_ISA=sse"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0 and "CPU_ISA=sse: only avx2 is known" in bad.stderr


def cache_workspace(tmp_path, tiny_bert):
    from tests.conftest import FAST, workspace, write_competition
    ws = workspace(tmp_path, {"text": ["text"], "label": "label", "n_folds": 3},
                   {"frozen": {"backbone": str(tiny_bert), "freeze_layers": 1, "max_len": 32},
                    "plain": {"backbone": str(tiny_bert), "max_len": 32},
                    "emb": {"kind": "embed_lr", "params": {**FAST["embed_lr"], "backbone": str(tiny_bert)}},
                    "svm": {"kind": "tfidf_svm", "params": FAST["tfidf_svm"]}})
    write_competition(ws, n_folds=3)
    return ws


def test_make_folds_builds_each_shared_cache_as_its_own_job_before_the_folds(tmp_path, tiny_bert):
    from tests.conftest import make
    ws = cache_workspace(tmp_path, tiny_bert)
    plan = make(ws, "folds", dry=True)
    for model in ("frozen", "emb"):
        built = plan.index(f"foldstack.cache --model=models/{model}.yaml --out=features/cache/{model}.json")
        assert built < plan.index(f"foldstack.train --model=models/{model}.yaml --fold=0")
    assert "models/plain.yaml --out" not in plan and "models/svm.yaml --out" not in plan, "no cache, no job"


@pytest.mark.slow
def test_the_cache_job_records_the_cache_its_folds_then_open(tmp_path, tiny_bert):
    import json
    from tests.conftest import make
    ws = cache_workspace(tmp_path, tiny_bert)
    make(ws, "features/cache/frozen.json", "features/cache/emb.json")
    info = json.loads((ws / "features" / "cache" / "frozen.json").read_text())
    meta = json.loads((ws / "features" / "cache" / info["cache"] / "meta.json").read_text())
    assert info["bytes"] == meta["bytes"] > 0 and info["texts"] == 160
    emb = json.loads((ws / "features" / "cache" / "emb.json").read_text())
    assert emb["bytes"] == (ws / "features" / "cache" / emb["cache"]).stat().st_size
    out = make(ws, "folds/frozen/fold0.npz")
    assert "foldstack.cache" not in out and "opened in" in out, "the fold opens the cache the job built"
    assert "foldstack.cache" not in make(ws, "folds", dry=True), "built once"
    (ws / "features" / "cache" / "frozen.json").unlink()  # as in a workspace whose folds predate the cache job
    plan = make(ws, "folds/frozen/fold0.npz", dry=True)
    assert "foldstack.cache --model=models/frozen.yaml" in plan and "foldstack.train" not in plan, "folds kept"


def test_the_cache_job_refuses_a_model_without_a_cache(tmp_path, tiny_bert):
    ws = cache_workspace(tmp_path, tiny_bert)
    done = subprocess.run([sys.executable, "-m", "foldstack.cache", "--model=models/svm.yaml", "--out=x.json"],
                          cwd=ws, capture_output=True, text=True)
    assert done.returncode != 0 and not (ws / "x.json").exists()
    assert done.stderr.strip().splitlines()[-1].endswith("has no shared cache (freeze_layers: 0, or a classical kind)")
