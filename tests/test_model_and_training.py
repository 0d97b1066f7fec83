"""The encoder + head, the optimizer groups, batching and the training loop's invariants (tiny random models)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from foldstack import config, trainer
from foldstack.batching import (CPU_EVAL_TOKENS, collate, encode, eval_plan, special_frame, train_batches,
                                train_width_multiple, truncate)
from foldstack.encoder import attention_kernel, build_model, load_tokenizer
from foldstack.optim import make_optimizer, make_scheduler, param_groups
from foldstack.text import FIELD_SEP
from tests.conftest import corpus


def cfg_for(backbone, **keys):
    base = dict(backbone=str(backbone), max_len=32, epochs=2, batch_size=8, eval_batch_size=16, lr=1e-3,
                head_lr=1e-2, lstm_hidden=8, amp="off", warmup=0.0)
    return config.Model(**{**base, **keys})


@pytest.mark.parametrize("head", ["bilstm", "cls", "mean", "last4"])
def test_every_trainable_parameter_in_exactly_one_group(tiny_backbone, head):
    model = build_model(cfg_for(tiny_backbone, head=head), n_out=3)
    groups = param_groups(model, lr=1e-3, layer_decay=0.9, head_lr=1e-2, weight_decay=0.01)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)), "a parameter sits in two groups"
    assert set(seen) == {id(p) for p in model.parameters() if p.requires_grad}, "a parameter has no group"
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == 1e-2 and by_name["encoder_depth0"]["lr"] == 1e-3
    n_layers = model.encoder.config.num_hidden_layers
    assert by_name[f"encoder_depth{n_layers}_nodecay"]["lr"] == pytest.approx(1e-3 * 0.9 ** n_layers)  # embeddings
    assert all(g["weight_decay"] == 0 for g in groups if g["name"].endswith("_nodecay"))


def test_attention_setting_and_both_kernels_compute_the_same(tiny_backbone):
    assert attention_kernel("auto") is None
    assert attention_kernel("eager") == "eager" and attention_kernel("sdpa") == "sdpa"
    cfg = cfg_for(tiny_backbone, dropout=0.0, attention_dropout=0.0)
    outs = {}
    for kernel in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = build_model(replace(cfg, attention=kernel), n_out=3).eval()
        assert model.encoder.config._attn_implementation == kernel
        ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
        outs[kernel] = model(ids, (ids != 0).long())
    torch.testing.assert_close(outs["eager"], outs["sdpa"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("head", ["bilstm", "cls", "mean", "last4"])
def test_head_gets_gradients_and_padding_does_not_change_outputs(tiny_backbone, head):
    torch.manual_seed(0)
    model = build_model(cfg_for(tiny_backbone, head=head, dropout=0.0), n_out=3).eval()
    tok = load_tokenizer(str(tiny_backbone))
    seqs = encode(tok, ["great movie", "a boring slow script with awful music and a bad plot"], 32, "head")
    short = collate(seqs[:1], tok.pad_token_id, 32)
    both = collate(seqs, tok.pad_token_id, 32)  # the first row is now padded
    with torch.no_grad():
        assert torch.allclose(model(**short)[0], model(**both)[0], atol=1e-5)
    model.train()
    model(**both).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for m in model.head_modules() for p in m.parameters())


def test_tokenizers_frame_fields_and_truncation(tiny_bert, tiny_roberta):
    for path, pad in ((tiny_bert, 0), (tiny_roberta, 1)):
        tok = load_tokenizer(str(path))
        assert tok.pad_token_id == pad
        prefix, suffix = special_frame(tok)
        [ids] = encode(tok, ["plot " * 50], 16, "head_tail")
        assert len(ids) == 16 and ids[:len(prefix)].tolist() == prefix and ids[-len(suffix):].tolist() == suffix
        [ids] = encode(tok, [f"plot {FIELD_SEP} movie"], 16, "head")
        assert tok.sep_token_id in ids[len(prefix):-len(suffix)].tolist(), "fields are split by the sep token"
    assert truncate(list(range(10)), 4, "head") == [0, 1, 2, 3]
    assert truncate(list(range(10)), 4, "tail") == [6, 7, 8, 9]
    assert truncate(list(range(10)), 8, "head_tail") == [0, 1, 4, 5, 6, 7, 8, 9]


def test_bucketed_batches_cover_every_row_once_and_pad_little():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 300, 2000)
    batches = train_batches(lengths, 16, rng)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(2000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded < 1.15 * lengths.sum(), "length bucketing should keep padding small"
    assert collate([np.arange(3), np.arange(9)], 1, 64)["input_ids"].shape == (2, 16)  # rounded to 8


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_inference_batches_cover_every_row_once_longest_first(device):
    lengths = np.concatenate([np.random.default_rng(1).integers(1, 300, 1000), [2049, 3000, 2048]])
    batches, multiple = eval_plan(lengths, 64, device)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1003))
    assert np.all(np.diff(lengths[flat]) <= 0)
    assert all(len(b) <= 64 for b in batches)
    if device == "cpu":  # small batches as wide as their longest row
        assert multiple == 1 and all(len(b) == 1 or len(b) * lengths[b].max() <= CPU_EVAL_TOKENS for b in batches)
        assert [len(b) for b in batches[:3]] == [1, 1, 1]  # longer than the budget: a batch of its own
        assert collate([np.arange(3), np.arange(9)], 1, 64, multiple)["input_ids"].shape == (2, 9)
    else:  # eval_batch_size rows, widths a multiple of 8 for tensor cores
        assert multiple == 8 and all(len(b) == 64 for b in batches[:-1])


def fold_data(tok, n_train=40, n_val=16, multilabel=False):
    texts, y = corpus(n_train + n_val + 8, seed=3)
    ids = encode(tok, texts, 32, "head")
    if multilabel:
        y = np.eye(3, dtype=np.float32)[y]
    return trainer.FoldData(ids[:n_train], y[:n_train], ids[n_train:n_train + n_val], y[n_train:n_train + n_val],
                            ids[n_train + n_val:])


def test_accumulation_steps_schedule_and_clipping_order(tiny_bert, tmp_path, monkeypatch):
    cfg = cfg_for(tiny_bert, grad_accum=3, batch_size=4, epochs=2)  # 40 rows -> 10 batches -> 4 steps/epoch
    tok = load_tokenizer(str(tiny_bert))
    model = build_model(cfg, 3)
    calls = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: (calls.append("clip"), real_clip(*a, **k))[1])
    real_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (calls.append("step"), real_step(self, *a, **k))[1])
    res = trainer.fit(model, fold_data(tok), cfg, "accuracy", False, tok.pad_token_id, tmp_path / "log", seed=0)
    assert calls == ["clip", "step"] * 8, "one clip right before each of ceil(10/3)=4 steps per epoch"
    assert res["val"].shape == (16, 3) and res["test"].shape == (8, 3)
    assert len((tmp_path / "log").read_text().splitlines()) == 2, "one log line per epoch"


@pytest.mark.parametrize("amp, exact", [("off", True), ("bf16", False)])
def test_cpu_training_width_exact_in_fp32_multiple_of_8_in_bf16(tiny_bert, tmp_path, monkeypatch, amp, exact):
    """fp32 on a CPU pads a training batch only to its longest row; bf16 (and CUDA, any precision) to a multiple of 8."""
    assert train_width_multiple("cpu", None) == 1
    assert train_width_multiple("cpu", torch.bfloat16) == train_width_multiple("cuda", None) == 8
    cfg = cfg_for(tiny_bert, batch_size=4, epochs=1, amp=amp)
    tok = load_tokenizer(str(tiny_bert))
    data, seen = fold_data(tok), []
    real = trainer.make_batch

    def spy(rows, idx, *args):
        batch = real(rows, idx, *args)
        seen.append((batch["input_ids"].shape[1], max(len(rows[i]) for i in idx)))
        return batch
    monkeypatch.setattr(trainer, "make_batch", spy)
    trainer.fit(build_model(cfg, 3), data, cfg, "accuracy", False, tok.pad_token_id, tmp_path / "log", seed=0)
    training = seen[:10]  # 40 rows in batches of 4; then come the validation and test batches
    assert any(longest % 8 for _, longest in training), "no batch that a multiple of 8 would widen"
    if exact:
        assert all(width == longest for width, longest in training)
    else:
        assert all(width % 8 == 0 and width - longest < 8 for width, longest in training)


def test_accumulated_gradient_equals_full_batch_gradient(tiny_bert):
    """loss / window over k micro-batches == the loss of one batch of k times the size (same-size batches)."""
    cfg = cfg_for(tiny_bert, head="mean")
    tok = load_tokenizer(str(tiny_bert))
    torch.manual_seed(0)
    model = build_model(cfg, 3).eval()  # no dropout anywhere: both passes compute the same function
    texts, y = corpus(8, seed=5)
    seqs = encode(tok, texts, 32, "head")
    batch = collate(seqs, tok.pad_token_id, 32)
    trainer.loss_fn(model(**batch), torch.as_tensor(y), False).backward()
    full = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for half in (slice(0, 4), slice(4, 8)):
        b = {k: v[half] for k, v in batch.items()}  # same padded width: identical per-row computation
        (trainer.loss_fn(model(**b), torch.as_tensor(y[half]), False) / 2).backward()
    for g_full, p in zip(full, model.parameters()):
        assert torch.allclose(g_full, p.grad, atol=1e-5)


def test_best_epoch_weights_give_the_predictions(tiny_bert, tmp_path, monkeypatch):
    cfg = cfg_for(tiny_bert, epochs=3)
    tok = load_tokenizer(str(tiny_bert))
    model = build_model(cfg, 3)
    scores = iter([0.5, 0.9, 0.1])  # epoch 2 is best; epoch 3 (the last) must not be used
    monkeypatch.setattr(trainer.metrics, "score", lambda *a, **k: next(scores))
    data = fold_data(tok)
    res = trainer.fit(model, data, cfg, "accuracy", False, tok.pad_token_id, tmp_path / "log", seed=0)
    assert res["best_epoch"] == 2
    model.load_state_dict(res["weights"])
    again = trainer.predict(model, data.test_ids, cfg, tok.pad_token_id, torch.device("cpu"), None, False)
    assert np.allclose(again, res["test"], atol=1e-6), "test predictions come from the best epoch's weights"


def test_multilabel_uses_sigmoid_and_bce(tiny_roberta, tmp_path):
    cfg = cfg_for(tiny_roberta, epochs=1)
    tok = load_tokenizer(str(tiny_roberta))
    res = trainer.fit(build_model(cfg, 3), fold_data(tok, multilabel=True), cfg, "micro_f1", True,
                      tok.pad_token_id, tmp_path / "log", seed=0)
    assert res["val"].shape == (16, 3) and not np.allclose(res["val"].sum(1), 1.0)


def test_amp_choices():
    cpu = torch.device("cpu")
    assert trainer.amp_dtype("off", cpu) is None
    assert trainer.amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        trainer.amp_dtype("fp16", cpu)


def test_bf16_autocast_trains_on_cpu(tiny_bert, tmp_path):
    cfg = cfg_for(tiny_bert, epochs=1, amp="bf16")
    tok = load_tokenizer(str(tiny_bert))
    res = trainer.fit(build_model(cfg, 3), fold_data(tok), cfg, "accuracy", False, tok.pad_token_id,
                      tmp_path / "log", seed=0)
    assert res["amp"] == "bfloat16" and np.isfinite(res["val"]).all() and res["val"].dtype == np.float32


def test_scheduler_reaches_zero_after_the_last_step(tiny_bert):
    model = build_model(cfg_for(tiny_bert), 3)
    opt = make_optimizer(model, cfg_for(tiny_bert))
    sched = make_scheduler(opt, total_steps=10, warmup=0.2)
    lrs = []
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[-1] == 0.0 and max(lrs) == pytest.approx(opt.param_groups[0]["initial_lr"])


def test_max_len_beyond_positions_is_refused(tiny_roberta):
    with pytest.raises(ValueError, match="exceeds the 66 positions"):
        build_model(replace(cfg_for(tiny_roberta), max_len=100), 3)


def test_a_fresh_model_per_fold_trained_only_on_other_folds(tiny_bert, tmp_path, monkeypatch):
    """Each fold starts from the pretrained weights (not the previous fold's) and never sees its own rows."""
    import pandas as pd
    from foldstack import train as train_stage
    texts, y = corpus(60, seed=9)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(60)], "text": texts, "text_lemma": texts, "label": y})
    test = frame.head(5)
    fold_of = np.arange(60) % 3
    seen = []
    real_fit = trainer.fit

    def spy(model, data, *args, **kwargs):
        start = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        # the model itself, not id(model): a freed fold's address can be reused by the next fold's model
        seen.append((model, start, {tuple(ids) for ids in data.train_ids}, {tuple(ids) for ids in data.val_ids}))
        return real_fit(model, data, *args, **kwargs)

    monkeypatch.setattr(trainer, "fit", spy)
    cfg = cfg_for(tiny_bert, epochs=1)
    comp = config.Competition(n_folds=3)
    for k in range(3):
        val_idx, res = train_stage.run_fold(cfg, comp, frame, test, fold_of, k, 3, tmp_path / f"f{k}.log")
        assert sorted(val_idx) == list(np.flatnonzero(fold_of == k)) and res["val"].shape == (20, 3)
    assert len({id(s[0]) for s in seen}) == 3, "one model object per fold (all kept alive: ids are distinct)"
    for _, start, train_rows, val_rows in seen[1:]:
        assert all(torch.equal(start[k], seen[0][1][k]) for k in start), "fold k+1 must not inherit fold k's training"
    assert len(set(texts)) == 60
    for _, _, train_rows, val_rows in seen:
        assert len(val_rows) == 20 and not (train_rows & val_rows), "a validation row reached its fold's training"


def test_bilstm_matches_a_packed_bidirectional_lstm():
    """The unpacked BiLSTM gives exactly what a packed nn.LSTM(bidirectional=True) gives at real tokens."""
    from foldstack.encoder import BiLSTM
    torch.manual_seed(0)
    ours = BiLSTM(6, 5)
    ref = torch.nn.LSTM(6, 5, batch_first=True, bidirectional=True)
    with torch.no_grad():  # same weights: direction 0 = forward, direction 1 (suffix _reverse) = backward
        for name, p in ref.named_parameters():
            src = ours.backward_lstm if name.endswith("_reverse") else ours.forward_lstm
            p.copy_(getattr(src, name.replace("_reverse", "")))
    x = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 4, 1])
    mask = (torch.arange(7) < lengths[:, None]).long()
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=7)
    got = ours(x, mask)
    real = mask.bool()
    assert torch.allclose(got[real], expected[real], atol=1e-6)


def test_multilabel_output_bias_starts_at_label_frequencies(tiny_bert):
    model = build_model(cfg_for(tiny_bert), 3)
    y = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
    trainer.init_label_priors(model, y)
    assert torch.allclose(torch.sigmoid(model.out.bias), torch.tensor([0.75, 0.25, 1e-4]), atol=1e-6)


@pytest.mark.parametrize("freeze", [0, 1])
def test_inference_attention_is_eager_then_restored_and_predicts_the_same(tiny_bert, freeze):
    cfg = config.Model(backbone=str(tiny_bert), max_len=32, freeze_layers=freeze, eval_batch_size=8)
    torch.manual_seed(0)
    model = build_model(cfg, 3)
    tok = load_tokenizer(str(tiny_bert))
    seqs = encode(tok, corpus(20)[0], cfg.max_len, cfg.truncation)
    encoders = [m for m in model.modules() if hasattr(m, "set_attn_implementation")]
    kernels = [m.config._attn_implementation for m in encoders]  # the private field inference_attention restores
    assert kernels and all(k == "sdpa" for k in kernels)
    cpu = torch.device("cpu")
    with trainer.inference_attention(model, cfg, cpu):
        assert all(m.config._attn_implementation == "eager" for m in encoders)
    assert [m.config._attn_implementation for m in encoders] == kernels
    fast = trainer.predict(model, seqs, cfg, tok.pad_token_id, cpu, None, False)
    with trainer.inference_attention(model, replace(cfg, attention="sdpa"), cpu):  # not auto: left alone
        assert [m.config._attn_implementation for m in encoders] == kernels
    with torch.inference_mode():  # SDPA: predict's loop without the eager switch
        plain = trainer._predict(model.eval(), seqs, cfg, tok.pad_token_id, cpu, None, False)
    np.testing.assert_allclose(fast, plain, atol=1e-5)
