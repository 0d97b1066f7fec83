"""Shared fixtures: tiny random BERT / RoBERTa backbones (tokenizers trained here), small competitions.

Nothing here touches the network: the backbones are built from configs, their tokenizers trained with
`tokenizers` on a few hundred sentences, and saved as local directories that `backbone:` can name.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models gain nothing from a second thread, and OpenMP threads that spin-wait crawl when another job holds a
# core; the end-to-end test's subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]


def _this_machine(host: str) -> bool:
    import ipaddress
    import socket
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        return host == "localhost"
    try:
        return host in socket.gethostbyname_ex(socket.gethostname())[2]  # Ray binds to the node's own address
    except OSError:
        return False


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """The suite never needs the network (issue 14): a connection from this process to another machine fails at
    once. What the tests need from a registry (the demo's wheel) `make setup` has cached."""
    import socket
    real = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _this_machine(address[0]):
            raise ConnectionRefusedError(f"the test suite must not use the network (tried {address[0]})")
        return real(self, address)
    socket.socket.connect = guarded
    yield
    socket.socket.connect = real


@pytest.fixture(autouse=True, scope="session")
def own_tmpdir(tmp_path_factory):
    """The subprocesses' temporary files go under pytest's own folder, which pytest prunes: each test workspace's
    `make -n` otherwise leaves its shadow stamps behind as one /tmp/foldstack-dry-<key> per workspace."""
    with pytest.MonkeyPatch.context() as mp:  # the session-scoped monkeypatch: TMPDIR comes back afterwards
        mp.setenv("TMPDIR", str(tmp_path_factory.mktemp("tmp")))
        yield


WORDS = ("movie film plot actor scene story great boring awful brilliant funny slow script director music "
         "paper model network learning data graph vision language robot security theory system").split()


def corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """n short texts over 3 classes whose words depend on the class (so a model can learn something)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    texts = []
    for y in labels:
        words = rng.choice(WORDS[y * 8:(y + 1) * 8], rng.integers(4, 30)).tolist() + rng.choice(WORDS, 3).tolist()
        texts.append(" ".join(words).capitalize() + ".")
    return texts, labels


def _train_texts() -> list[str]:
    return corpus(400)[0] + [" ".join(WORDS)] * 5


def make_tiny_bert(path: Path, positions: int = 128) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_train_texts(), trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(path)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=positions)
    BertModel(cfg).save_pretrained(path)
    return path


def make_tiny_roberta(path: Path) -> Path:
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel
    tok = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids: <s>=0, <pad>=1, </s>=2
    tok.train_from_iterator(_train_texts(), vocab_size=400, special_tokens=specials)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    fast.save_pretrained(path)
    cfg = RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=66 + 2, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2, type_vocab_size=1)
    RobertaModel(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory) -> Path:
    return make_tiny_roberta(tmp_path_factory.mktemp("tiny_roberta"))


@pytest.fixture(params=["bert", "roberta"])
def tiny_backbone(request, tiny_bert, tiny_roberta) -> Path:
    return tiny_bert if request.param == "bert" else tiny_roberta


def write_competition(ws: Path, n_train: int = 120, n_test: int = 40, **keys) -> Path:
    """A small 3-class competition in `ws` (data/raw + data/competition.yaml); keys override the YAML."""
    texts, labels = corpus(n_train + n_test, seed=1)
    names = np.array(["neg", "neu", "pos"])
    raw = ws / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": [f"tr{i}" for i in range(n_train)], "text": texts[:n_train],
                  "label": names[labels[:n_train]]}).to_csv(raw / "train.csv", index=False)
    test_ids = [f"te{i}" for i in range(n_test)]
    pd.DataFrame({"id": test_ids, "text": texts[n_train:]}).to_csv(raw / "test.csv", index=False)
    pd.DataFrame({"id": test_ids, "label": "neg"}).to_csv(raw / "sample_submission.csv", index=False)
    pd.DataFrame({"id": test_ids, "label": names[labels[n_train:]]}).to_csv(ws / "data" / "solution.csv",
                                                                           index=False)
    import yaml
    comp = {"train": "data/raw/train.csv", "test": "data/raw/test.csv",
            "sample_submission": "data/raw/sample_submission.csv", "text": ["text"], "label": "label",
            "n_folds": 3, **keys}
    (ws / "data" / "competition.yaml").write_text(yaml.safe_dump(comp))
    return ws


def empty_workspace(ws: Path) -> Path:
    """`foldstack init ws` without the shipped model YAMLs: the test writes its own members."""
    from foldstack import cli
    cli.init(ws)
    for shipped in (ws / "models").glob("*.yaml"):
        shipped.unlink()
    return ws


def write_multilabel(ws: Path, n: int = 120, n_train: int = 90, seed: int = 7) -> Path:
    """A small multi-label competition in `ws`: one space-delimited label column `topics`, a quarter of the rows with a
    second label, 3 folds, micro-F1 (data/raw + data/competition.yaml)."""
    import yaml
    names = ["acq", "earn", "grain"]
    texts, y = corpus(n, seed=seed)
    labels = [" ".join(sorted({names[k], names[(k + 1) % 3]} if i % 4 == 0 else {names[k]}))
              for i, k in enumerate(y)]
    comp = {"text": ["text"], "label": "topics", "task": "multilabel", "metric": "micro_f1", "n_folds": 3}
    (ws / "data" / "competition.yaml").write_text(yaml.safe_dump(comp))
    raw = ws / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(n)], "text": texts, "topics": labels})
    frame[:n_train].to_csv(raw / "train.csv", index=False)
    frame[n_train:][["id", "text"]].to_csv(raw / "test.csv", index=False)
    frame[n_train:][["id"]].assign(topics="earn").to_csv(raw / "sample_submission.csv", index=False)
    return ws


@pytest.fixture
def captured_fit(monkeypatch) -> dict:
    """Replace both fit functions of the train stage with one that records what a fold would train and validate
    on (texts and targets keyed by train / val / test) and predicts zeros; returns the record."""
    from foldstack import train as train_stage
    captured = {}

    def fake_fit(cfg, comp, texts, ys, n_classes, log_path, seed, cache=None):
        captured.update(texts=texts, ys=ys, seed=seed)
        return {"val": np.zeros((len(texts["val"]), n_classes)), "test": np.zeros((len(texts["test"]), n_classes)),
                "score": 0}
    monkeypatch.setattr(train_stage, "fit_transformer", fake_fit)
    monkeypatch.setattr(train_stage, "fit_classical", fake_fit)
    return captured


# --- shared by the end-to-end tests: small members and driving Make in a workspace ---------------------------

# classical members' params that keep the tests fast
FAST = {"tfidf_lr": {"n_jobs": 1, "max_features": 5000},
        "tfidf_lgbm": {"n_jobs": 1, "max_features": 2000, "svd_components": 16, "n_estimators": 40,
                       "min_child_samples": 5},
        "tfidf_svm": {"max_features": 5000}, "nbsvm": {"n_jobs": 1, "max_features": 5000},
        "embed_lr": {"max_len": 32, "C": 100.0}}
# a tiny transformer member (the backbone comes from tiny_bert / tiny_roberta)
TINY = dict(kind="transformer", head="bilstm", lstm_hidden=16, max_len=64, epochs=2, batch_size=16, lr=1e-3,
            head_lr=3e-3, amp="off", warmup=0.1)


def make(ws: Path, *targets: str, dry: bool = False, env: dict | None = None) -> str:
    """`make -C ws targets` (-n when dry), checked to succeed; `env` adds to (or blanks) the environment."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    cmd = ["make", "--no-print-directory", "-C", str(ws), *(["-n"] if dry else []), *targets]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the configs' include (build/vars.mk) is remade, and shown, whenever a YAML changed: not a step of the plan
    return "\n".join(line for line in done.stdout.splitlines() if "foldstack.makevars" not in line) + "\n"


def workspace(tmp_path: Path, competition: dict, models: dict) -> Path:
    ws = tmp_path / "ws"
    empty_workspace(ws)
    (ws / "data" / "competition.yaml").write_text(yaml.safe_dump(competition))
    for name, keys in models.items():
        transformer = keys.get("kind", "transformer") == "transformer"  # a classical kind refuses TINY's keys
        (ws / "models" / f"{name}.yaml").write_text(yaml.safe_dump({**TINY, **keys} if transformer else keys))
    # The plain mean keeps these runs short; tests/test_ensemble.py covers the other methods.
    (ws / "ensemble" / "ensemble.yaml").write_text(yaml.safe_dump({"methods": ["mean"], "submit": "mean"}))
    return ws


def check_oof_contract(ws: Path, model: str, n_train: int, n_test: int, n_classes: int) -> dict:
    out = ws / "folds" / model
    oof, test = np.load(out / "oof.npy"), np.load(out / "test.npy")
    assert oof.dtype == np.float32 and oof.shape == (n_train, n_classes)
    assert test.dtype == np.float32 and test.shape == (n_test, n_classes)
    manifest = json.loads((out / "manifest.json").read_text())
    folds = pd.read_csv(ws / "folds" / "folds.csv")
    rows = np.concatenate([np.load(out / f"fold{k}.npz")["val_idx"] for k in range(folds["fold"].nunique())])
    assert sorted(rows.tolist()) == list(range(n_train)), "every OOF row written exactly once"
    for k in range(folds["fold"].nunique()):  # each fold wrote exactly its own validation rows
        assert set(np.load(out / f"fold{k}.npz")["val_idx"]) == set(np.flatnonzero(folds["fold"] == k))
    assert {"classes", "cv", "fold_scores", "config_hash", "version", "train_secs"} <= set(manifest)
    return manifest
