"""Within-task masked-LM pretraining: no labels read, resumable to the same weights, output usable as a backbone."""
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from foldstack import config, pretrain
from tests.conftest import corpus, empty_workspace


def processed(tmp_path, labels_seed: int):
    texts, y = corpus(60, seed=8)
    rng = np.random.default_rng(labels_seed)
    train = pd.DataFrame({"id": range(40), "text": texts[:40], "text_lemma": texts[:40],
                          "label": rng.permutation(y[:40])})
    test = pd.DataFrame({"id": range(20), "text": texts[40:], "text_lemma": texts[40:]})
    d = tmp_path / f"p{labels_seed}"
    d.mkdir()
    train.to_parquet(d / "train.parquet")
    test.to_parquet(d / "test.parquet")
    return d


def run(tmp_path, backbone, data_dir, out, **keys):
    cfg = tmp_path / "mlm.yaml"
    cfg.write_text(yaml.safe_dump({"backbone": str(backbone), "steps": 4, "max_len": 32, "batch_size": 8,
                                   "save_every": 2, "amp": "off", "lr": 1e-3, **keys}))
    pretrain.main([f"--config={cfg}", f"--train={data_dir}/train.parquet", f"--test={data_dir}/test.parquet",
                   f"--out-dir={out}"])
    from safetensors.torch import load_file
    return load_file(out / "model.safetensors")


def test_pretraining_reads_no_label_and_changes_the_weights(tmp_path, tiny_bert):
    a = run(tmp_path, tiny_bert, processed(tmp_path, 0), tmp_path / "a")
    b = run(tmp_path, tiny_bert, processed(tmp_path, 1), tmp_path / "b")  # same texts, labels shuffled
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "labels changed the pretraining"
    from transformers import BertModel
    before = BertModel.from_pretrained(tiny_bert).state_dict()
    word = next(k for k in a if k.endswith("word_embeddings.weight"))
    assert not torch.equal(a[word], before["embeddings.word_embeddings.weight"]), "nothing trained"
    summary = (tmp_path / "a" / "done.json").read_text()
    assert '"steps": 4' in summary and not (tmp_path / "a.ckpt").exists()


@pytest.mark.slow
def test_an_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, tiny_bert, monkeypatch):
    data = processed(tmp_path, 0)
    whole = run(tmp_path, tiny_bert, data, tmp_path / "whole")
    real = pretrain.step_batch

    def dies_at_step_3(seqs, step, cfg, collator):
        if step == 3:
            raise KeyboardInterrupt
        return real(seqs, step, cfg, collator)
    monkeypatch.setattr(pretrain, "step_batch", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny_bert, data, tmp_path / "resumed")
    assert (tmp_path / "resumed.ckpt" / "state.pt").exists() and not (tmp_path / "resumed").exists()
    monkeypatch.setattr(pretrain, "step_batch", real)
    resumed = run(tmp_path, tiny_bert, data, tmp_path / "resumed")
    assert all(torch.allclose(whole[k], resumed[k], atol=1e-6) for k in whole)


def test_the_pretrained_directory_is_a_backbone(tmp_path, tiny_bert):
    run(tmp_path, tiny_bert, processed(tmp_path, 0), tmp_path / "mlm")
    from foldstack.encoder import build_model
    model = build_model(config.Model(backbone=str(tmp_path / "mlm"), max_len=32, lstm_hidden=8), 3)
    assert model.encoder.config.num_hidden_layers == 2


def test_bad_keys_stop_with_one_line(tmp_path):
    cfg = tmp_path / "mlm.yaml"
    cfg.write_text("steps: 10\nmask_rate: 0.2\n")
    with pytest.raises(SystemExit) as exc:
        pretrain.main([f"--config={cfg}", "--train=x", "--test=y", "--out-dir=z"])
    assert str(exc.value.code).startswith(f"error: {cfg}: unknown key 'mask_rate'")


def test_masked_positions_loss_equals_the_models_own_loss(tiny_backbone):
    from foldstack.batching import encode
    cfg = pretrain.Pretrain(backbone=str(tiny_backbone), max_len=32, batch_size=8)
    tok, model, collator = pretrain.build(cfg)
    batch = pretrain.step_batch(encode(tok, corpus(20)[0], 32, "head"), 0, cfg, collator)
    model.eval()
    with torch.no_grad():
        assert pretrain.mlm_loss(model, batch).item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)


def test_a_model_on_a_pretrained_backbone_trains_after_the_pretraining(tmp_path, tiny_bert):
    import subprocess
    from tests.conftest import write_competition
    ws = tmp_path / "ws"
    empty_workspace(ws)
    write_competition(ws)
    (ws / "models" / "pretrain" / "tiny.yaml").write_text(f"backbone: {tiny_bert}\nsteps: 2\n")
    (ws / "models" / "on_tiny.yaml").write_text("backbone: models/pretrain/tiny\nmax_len: 32\n")
    plan = subprocess.run(["make", "-n", "-C", str(ws), "folds"], capture_output=True, text=True, check=True).stdout
    pretrain_at = plan.index("foldstack.pretrain --config=models/pretrain/tiny.yaml")
    assert pretrain_at < plan.index("foldstack.train --model=models/on_tiny.yaml --fold=0")
    assert "--out-dir=models/pretrain/tiny" in plan
