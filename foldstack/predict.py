"""predict stage: a test file in the competition's format -> every member's fold models -> the blend -> a submission.

Reads  --test: a CSV/TSV with the competition's id and text columns and separator (data/competition.yaml);
       --sample (optional): a sample submission whose format and row order the output takes; without one the
       output has the id column and the competition's label column(s), in the test file's row order;
       from the workspace (or a bundle, --bundle): data/competition.yaml, data/processed/classes.json,
       ensemble[/r<r>]/<method>/{scores.json,blender.pkl} (default method: leaderboard.json's chosen), and for
       each member of that method models/<m>.yaml and folds/<m>[/r<r>]/{manifest.json,fold<k>.safetensors|.joblib};
       data/processed/train.parquet when the blend smooths over neighbours (ensemble.yaml `neighbours`), and
       features/neighbours_k<k>_<model>.npz (the train rows' embeddings) when it smooths over embeddings too
Writes --out: the submission;  --probs-dir/<member>.npy and <method>.npy: test probabilities float32 [n, C] in
       the test file's row order
Run    make predict TEST=new_test.csv [OUT=submissions/predict.csv] [ROUND=r] [METHOD=m] [SAMPLE=...]
       python -m foldstack.predict --test=new_test.csv --out=sub.csv [--round=r] [--method=m]
       foldstack predict --bundle=DIR new_test.csv --out=sub.csv   (foldstack.bundle; offline, no workspace)

Each member predicts exactly as its folds did in training: the same prep (field joining, lemmas), the mean over
its k fold models (and over seeds within a fold), then the blender fitted on all OOF rows. A frozen-layer member
runs its frozen layers once for all folds into a temporary float16 cache, as training did, and each fold runs
only its upper layers on it. A blend fitted with neighbour smoothing smooths each member's probabilities as the
ensemble stage did: over graphs of the train texts and the new texts (foldstack.neighbours: TF-IDF, and an embed_lr
member's embeddings), the train rows voting their labels (`--probs-dir` keeps the members' own, unsmoothed
probabilities). Smoothing is transductive: a row's prediction depends on the other rows predicted with it, so predict
a competition's whole test file at once. The new texts' embeddings are computed afresh, in other batches than the
cache's, so a near-tie between two neighbours can rank differently than in training: equal up to float rounding.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, fold_models
from .bundle import Layout, chosen_method, verify
from .errors import one_line_errors
from .io import InputError, read_table, save_npy


def read_test(path: Path, comp: config.Competition, sample_path: Path | None, classes: list[str]):
    """The new test table and the frame whose columns / row order the submission takes."""
    from .io import check_unique_ids
    from .prep import check_sample
    test = read_table(path, comp.sep, [comp.id, *comp.text], comp.encoding)
    check_unique_ids(test, comp.id, path)
    if sample_path is not None:
        sample = read_table(sample_path, ",", [comp.id])
        check_sample(sample, test, comp, sample_path)
        return test, sample
    return test, pd.DataFrame({comp.id: test[comp.id], **{c: "" for c in default_columns(comp, classes)}})


def default_columns(comp: config.Competition, classes: list[str]) -> list[str]:
    """The submission's columns without a sample: one per class for per-class formats (0/1 label columns,
    multi-class probabilities), else the competition's label column."""
    if len(comp.label) > 1 or (comp.submission_values == "probability" and len(classes) > 2):
        return list(classes)
    return list(comp.label)


def member_texts(test: pd.DataFrame, comp, cfgs: dict) -> dict:
    """{raw, lemma} texts as prep writes them; lemmas only if a member reads them."""
    from .text import join_text
    texts = {"raw": join_text(test, comp.text)}
    if any(cfg.text == "lemma" for cfg in cfgs.values()):
        from .text import lemmatize_texts
        texts["lemma"] = lemmatize_texts(texts["raw"])
    return texts


def load_member_cfg(layout: Layout, member: str) -> config.Model:
    """models/<m>.yaml, which must be the config folds/<m> was trained with; the bundle's backbone copy if any."""
    path, man_path = layout.model_yaml(member), layout.member_dir(member) / "manifest.json"
    if not man_path.exists():
        raise InputError(f"{man_path}: not found (member {member} of the blend: run make folds)")
    cfg = config.load(config.Model, path)
    if config.config_hash(cfg) != json.loads(man_path.read_text())["config_hash"]:
        raise InputError(f"{path}: changed since {man_path.parent} was trained: re-run make folds first")
    backbone = layout.backbone(member)
    if backbone is None:
        return cfg
    params = {**cfg.params, "backbone": str(backbone)} if cfg.kind == "embed_lr" else cfg.params
    return dataclasses.replace(cfg, backbone=str(backbone), params=params)


def fold_files(layout: Layout, member: str) -> list[list[Path]]:
    """Per fold, its model files (one per seed); InputError naming the first fold that kept none."""
    folder = layout.member_dir(member)
    n_folds = len(json.loads((folder / "manifest.json").read_text())["fold_scores"])
    out = []
    for k in range(n_folds):
        found = fold_models.files(folder, k)
        if not found:
            raise InputError(f"{folder}/fold{k}: no saved model (trained with keep_models: false? re-run make folds)")
        out.append(found)
    return out


def predict_transformer(cfg, files: list[list[Path]], texts: list[str], n_classes: int, multilabel: bool):
    """Mean over folds (and seeds) of the fold classifiers' probabilities [n, C]."""
    import tempfile

    import torch

    from .batching import encode
    from .encoder import build_model, load_tokenizer
    from .trainer import amp_dtype, predict
    tokenizer = load_tokenizer(cfg.backbone)
    seqs = encode(tokenizer, texts, cfg.max_len, cfg.truncation)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg, n_classes, pretrained=False).to(device)
    dtype = amp_dtype(cfg.amp, device)
    rows, frozen, folds = seqs, None, []
    with tempfile.TemporaryDirectory(prefix="foldstack-frozen-") as tmp:
        for seeds in files:
            runs = []
            for f in seeds:
                state = fold_models.load(f)
                same_frozen_layers(state, frozen, f)
                model.load_state_dict(state)  # strict: every tensor comes from the fold's file
                if cfg.freeze_layers and frozen is None:  # the first file's frozen layers serve every fold
                    frozen = state
                    rows = frozen_rows(model, seqs, texts, tokenizer.pad_token_id, cfg, Path(tmp))
                runs.append(predict(model, rows, cfg, tokenizer.pad_token_id, device, dtype, multilabel))
            folds.append(np.mean(runs, axis=0))
    return np.mean(folds, axis=0).astype(np.float32)


def frozen_rows(model, seqs: list, texts: list[str], pad_id: int, cfg, tmp: Path):
    """The frozen lower layers' output for each distinct text, computed once into a cache under `tmp` (as the
    train stage's, fp32 stored as float16), as rows the upper layers of every fold read."""
    from .hidden_cache import HiddenCache, build
    first: dict[str, int] = {}  # each distinct text -> its first row, in first-seen order
    for i, text in enumerate(texts):
        first.setdefault(text, i)
    build(model, [seqs[i] for i in first.values()], pad_id, cfg, tmp / "frozen", {"freeze_layers": cfg.freeze_layers})
    return HiddenCache(tmp / "frozen", list(first)).rows(texts)


def same_frozen_layers(state: dict, frozen: dict | None, path: Path) -> None:
    """A fold whose frozen layers differ from the first fold's cannot read its cache: stop, naming the file."""
    if frozen is None:
        return
    import torch
    for key, value in frozen.items():
        if key.startswith("lower.") and not torch.equal(state[key], value):
            raise InputError(f"{path}: its frozen layers ({key}) differ from {path.parent}'s first fold; "
                             "were the folds trained from different backbones? re-run make folds")


def predict_classical(cfg, files: list[list[Path]], texts: list[str], embedded: np.ndarray | None) -> np.ndarray:
    """Mean over folds (and seeds) of the fitted members' probabilities; embed_lr reads `embedded` (its
    embeddings of the texts, computed once)."""
    folds = [np.mean([fold_models.load(f).predict(texts, lambda _: embedded) for f in seeds], axis=0)
             for seeds in files]
    return np.mean(folds, axis=0).astype(np.float32)


def predict_members(layout: Layout, members: list[str], test: pd.DataFrame, comp, n_classes: int):
    """(each member's probabilities, each embed_lr member's embeddings of the new texts)."""
    cfgs = {m: load_member_cfg(layout, m) for m in members}
    files = {m: fold_files(layout, m) for m in members}  # every file found before any model runs
    texts = member_texts(test, comp, cfgs)
    out, embedded = {}, {}
    for m, cfg in cfgs.items():
        t0 = time.perf_counter()
        rows = texts[cfg.text]
        if cfg.kind == "transformer":
            out[m] = predict_transformer(cfg, files[m], rows, n_classes, comp.multilabel)
        else:
            if cfg.kind == "embed_lr":  # torch only for a member that needs it
                from .hidden_cache import embed_texts
                embedded[m] = embed_texts(cfg.options, rows)
            out[m] = predict_classical(cfg, files[m], rows, embedded.get(m))
        print(f"  {m}: {len(files[m])} folds, {len(rows) / (time.perf_counter() - t0):.0f} rows/s")
    return out, embedded


def smooth_members(layout: Layout, smoothing: dict, probs: dict, embedded: dict, test: pd.DataFrame,
                   comp) -> dict:
    """Each member's probabilities smoothed over the neighbours of the train and new texts, as in training: by
    TF-IDF over the texts, and by the embed_lr member's embeddings (the train rows' from the graph file)."""
    from . import neighbours as nb
    from .labels import classes_json, targets
    from .text import join_text
    info = classes_json(layout.classes.parent)
    multilabel = info["task"] == "multilabel"
    path = layout.classes.parent / "train.parquet"
    if not path.exists():
        raise InputError(f"{path} not found: the blend smooths over the train texts' neighbours (make prep)")
    train = pd.read_parquet(path, columns=["text", "labels" if multilabel else "label"])
    k, graphs = smoothing["k"], []
    if smoothing["alpha"]:
        idx, sim = nb.build(train["text"].tolist() + join_text(test, comp.text), k)
        graphs.append(nb.Graph(idx, sim, smoothing["alpha"], k, smoothing["power"]))
    if "embed" in smoothing:
        how = smoothing["embed"]
        hashed = json.loads((layout.member_dir(how["model"]) / "manifest.json").read_text())["config_hash"]
        trained = nb.load_train_embeddings(layout.root / nb.graph_path(k, how["model"]), len(train), hashed)
        idx, sim = nb.build_dense(np.concatenate([trained, embedded[how["model"]]]), k)
        graphs.append(nb.Graph(idx, sim, how["alpha"], k, how["power"]))
    y = nb.one_hot(targets(train, len(info["classes"]), multilabel), len(info["classes"]))
    # float64 into the blender, as in training: a row on a threshold must not flip
    return {m: nb.smooth_test(p.astype(np.float64), y, graphs) for m, p in probs.items()}


def blend(layout: Layout, method: str, members: list[str], probs: dict) -> np.ndarray:
    """The method's final blender (fitted on every OOF row) on the members' probabilities, in its member order."""
    P = np.stack([probs[m] for m in members], axis=1).astype(np.float64)
    blender = pickle.loads((layout.ensemble_dir / method / "blender.pkl").read_bytes())  # trusted: foldstack.bundle
    return np.asarray(blender.predict_proba(P), dtype=np.float32)


def run(layout: Layout, test_path: Path, out: Path, probs_dir: Path | None, method: str | None,
        sample_path: Path | None) -> float:
    """The whole prediction; returns rows per second."""
    from .io import atomic_path
    from .submit import check_submission, to_frame
    start = time.perf_counter()
    comp = config.load(config.Competition, layout.competition)
    classes = json.loads(layout.classes.read_text())["classes"]
    test, sample = read_test(test_path, comp, sample_path, classes)
    method = chosen_method(layout, method)
    scores_path = layout.ensemble_dir / method / "scores.json"
    if not scores_path.exists():
        known = sorted(p.parent.name for p in layout.ensemble_dir.glob("*/scores.json"))
        raise InputError(f"{scores_path} not found: method {method!r} is not fitted here (fitted: "
                         f"{', '.join(known) or 'none; run make submit'})")
    scores = json.loads(scores_path.read_text())
    probs, embedded = predict_members(layout, scores["members"], test, comp, len(classes))
    smoothing = scores.get("neighbours")
    smoothed = smooth_members(layout, smoothing, probs, embedded, test, comp) if smoothing else probs
    probs[method] = blend(layout, method, scores["members"], smoothed)
    thr = np.asarray(scores["thresholds"]) if "thresholds" in scores else 0.5
    sub = to_frame(probs[method], test[comp.id].to_numpy(), classes, comp, sample, thr)
    with atomic_path(out) as tmp:
        sub.to_csv(tmp, index=False)
        if sample_path is not None:
            check_submission(read_table(tmp, ",", [comp.id]), sample, classes, comp, out)
    if probs_dir is not None:
        for name, p in probs.items():
            save_npy(probs_dir / f"{name}.npy", p)
    return len(test) / (time.perf_counter() - start)


def use_bundle(root: Path) -> Layout:
    """Check the bundle, point NLTK at its WordNet; its layout."""
    verify(root)
    layout = Layout(root, is_bundle=True)
    if layout.nltk_data is not None:  # the lemmatizer's WordNet, in this process and any worker it starts
        import os

        import nltk
        nltk.data.path.insert(0, str(layout.nltk_data))
        os.environ["NLTK_DATA"] = os.pathsep.join(filter(None, [str(layout.nltk_data), os.environ.get("NLTK_DATA")]))
    return layout


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("test_file", nargs="?", help="the test file (or --test)")
    ap.add_argument("--test", default=None, help="the test file, in the competition's format")
    ap.add_argument("--out", default="submissions/predict.csv", help="the submission to write")
    ap.add_argument("--probs-dir", default=None, help="also write each member's and the blend's probabilities")
    ap.add_argument("--sample", default=None, help="a sample submission: the output's columns and row order")
    ap.add_argument("--method", default=None, help="the blend (default: the leaderboard's chosen method)")
    ap.add_argument("--round", type=int, default=0, help="pseudo-label round whose models and blend to use")
    ap.add_argument("--workspace", default=".", help="the workspace (ignored with --bundle)")
    ap.add_argument("--bundle", default=None, help="an export bundle (make export) instead of the workspace")
    args = ap.parse_args(argv)
    test = args.test or args.test_file
    if not test:
        ap.error("a test file is required (--test=FILE)")
    layout = use_bundle(Path(args.bundle)) if args.bundle else Layout(Path(args.workspace), args.round)
    rate = run(layout, Path(test), Path(args.out), Path(args.probs_dir) if args.probs_dir else None,
               args.method, Path(args.sample) if args.sample else None)
    print(f"predict: {args.out} from {test} ({rate:.1f} rows/s end to end)")


if __name__ == "__main__":
    main()
