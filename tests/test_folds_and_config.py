"""Folds are disjoint, covering, stratified, group-safe and reproducible; configs refuse what they don't know."""
import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from foldstack import config, kinds
from foldstack.folds import assign_folds, training_mask


def comp(**keys):
    return config.Competition(**keys)


def train_frame(n=200, groups=False, multilabel=False, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"id": [f"r{i}" for i in range(n)]})
    if multilabel:
        df["labels"] = [sorted(set(rng.integers(0, 6, rng.integers(1, 3)).tolist())) for _ in range(n)]
    else:
        df["label"] = rng.integers(0, 4, n)
    if groups:
        df["group"] = rng.integers(0, 40, n).astype(str)
    return df


@pytest.mark.parametrize("kind", ["stratified", "grouped", "multilabel"])
def test_folds_disjoint_covering_and_seeded(kind):
    df = train_frame(groups=kind == "grouped", multilabel=kind == "multilabel")
    c = comp(task="multilabel" if kind == "multilabel" else "multiclass",
             group="g" if kind == "grouped" else None, n_folds=5, seed=7)
    fold = assign_folds(df, c, n_classes=6)
    assert fold.shape == (len(df),) and set(fold) == set(range(5))  # every row in exactly one fold
    val_sets = [set(np.flatnonzero(fold == k)) for k in range(5)]
    assert sum(map(len, val_sets)) == len(df)
    for k in range(5):  # a row is on the training side of every fold but its own
        assert not (set(np.flatnonzero(training_mask(fold, k))) & val_sets[k])
    assert (assign_folds(df, c, 6) == fold).all(), "same seed, same folds"
    other = assign_folds(df, config.Competition(**{**c.__dict__, "seed": 8}), 6)
    assert not (other == fold).all(), "the seed must matter (iterative stratification needs shuffle=True)"
    if kind == "grouped":
        assert (df.assign(f=fold).groupby("group")["f"].nunique() == 1).all(), "a group straddles folds"


def test_stratified_folds_keep_class_ratios():
    df = train_frame(n=1000)
    fold = assign_folds(df, comp(n_folds=5), 4)
    overall = np.bincount(df["label"], minlength=4) / len(df)
    for k in range(5):
        share = np.bincount(df["label"][fold == k], minlength=4) / (fold == k).sum()
        assert np.abs(share - overall).max() < 0.02


def test_unknown_key_and_bad_type_name_file_and_key(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("epochs: 2\nlearning_rate: 1e-5\n")
    with pytest.raises(config.ConfigError, match=r"m\.yaml: unknown key 'learning_rate'"):
        config.load(config.Model, path)
    path.write_text("epochs: two\n")
    with pytest.raises(config.ConfigError, match=r"m\.yaml: key 'epochs': expected int"):
        config.load(config.Model, path)
    path.write_text("head: gru\n")
    with pytest.raises(config.ConfigError, match=r"key 'head' must be one of"):
        config.load(config.Model, path)


def test_overrides_are_checked_like_yaml(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("epochs: 2\nlr: 2.0e-5\n")
    cfg = config.load(config.Model, path, config.parse_overrides(["--epochs=1", "--lr=3e-5", "--max-len=64"]))
    assert (cfg.epochs, cfg.lr, cfg.max_len) == (1, 3e-5, 64)
    with pytest.raises(config.ConfigError, match="unknown key 'epoch'"):
        config.load(config.Model, path, config.parse_overrides(["--epoch=1"]))
    with pytest.raises(dataclasses_frozen_error()):
        cfg.epochs = 3


def dataclasses_frozen_error():
    import dataclasses
    return dataclasses.FrozenInstanceError


def test_competition_lists_and_checks(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("text: [title, abstract]\nlabel: categories\ntask: multiclass\nsep: \"\\t\"\n")
    c = config.load(config.Competition, path)
    assert c.text == ("title", "abstract") and c.label == ("categories",) and c.sep == "\t"
    path.write_text("task: regression\n")
    with pytest.raises(config.ConfigError, match="key 'task' must be one of"):
        config.load(config.Competition, path)


def test_off_and_on_stay_strings_in_yaml_and_overrides(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("amp: off\nkeep_models: false\n")
    cfg = config.load(config.Model, path, config.parse_overrides(["--attention=eager"]))
    assert cfg.amp == "off" and cfg.keep_models is False
    assert config.load(config.Model, path, config.parse_overrides(["--amp=off"])).amp == "off"


def test_init_ships_every_member_and_the_competition_transformer(tmp_path):
    from foldstack import cli
    from tests.conftest import ROOT
    cli.init(tmp_path / "ws")
    models = {p.name for p in (tmp_path / "ws" / "models").glob("*.yaml")}
    shipped = {p.name for p in (ROOT / "models").glob("*.yaml")} | {p.name for p in (ROOT / "models" / "extra").glob("*.yaml")}
    assert models == shipped and {"embed_lr.yaml", "tfidf_svm.yaml", "nbsvm.yaml"} <= models
    transformer = config.load(config.Model, tmp_path / "ws" / "models" / "minilm_bilstm.yaml")
    assert transformer.epochs > 1, "the competition default trains more than one epoch"
    assert (tmp_path / "ws" / "models" / "pretrain" / "minilm_mlm.yaml").exists()


def test_init_gitignore_keeps_data_and_artefacts_out_and_configs_in(tmp_path):
    import subprocess
    from foldstack import cli
    ws = tmp_path / "ws"
    cli.init(ws)
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    paths = {"data/raw/train.csv": True, "data/processed/train.parquet": True, "folds/m/oof.npy": True,
             "features/eda.parquet": True, "features/cache/x/hidden.npy": True, "ensemble/mean/test.npy": True,
             "submissions/mean.csv": True, "models/pretrain/minilm_mlm/model.safetensors": True, "build/vars.mk": True,
             ".stamps/x": True, "data/competition.yaml": False, "models/minilm_bilstm.yaml": False,
             "models/pretrain/minilm_mlm.yaml": False, "ensemble/ensemble.yaml": False, "features/augment.yaml": False}
    done = subprocess.run(["git", "-C", str(ws), "check-ignore", *paths], capture_output=True, text=True)
    assert set(done.stdout.split()) == {p for p, ignored in paths.items() if ignored}


def test_a_renamed_key_says_what_replaced_it(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("save_checkpoint: true\n")
    with pytest.raises(config.ConfigError, match=r"m\.yaml: unknown key 'save_checkpoint' \(replaced by keep_models"):
        config.load(config.Model, path)


def test_every_config_key_has_help():
    """Each key of every YAML config carries its meaning beside it: `--help` of train and pretrain lists them."""
    from foldstack import augment, ensemble, kinds, pretrain, pseudo
    classes = [config.Competition, config.Model, pretrain.Pretrain, ensemble.Ensemble, pseudo.Pseudo, augment.Eda,
               augment.Backtrans, *kinds.PARAMS.values()]
    for cls in classes:
        undocumented = [line.split("=")[0].strip() for line in config.keys_help(cls).splitlines()
                        if len(line.split(None, 1)) < 2]
        assert not undocumented, f"{cls.__name__}: {undocumented}"


def test_makevars_renders_what_the_makefile_reads(tmp_path):
    from foldstack import makevars
    comp, ens = tmp_path / "competition.yaml", tmp_path / "ensemble.yaml"
    comp.write_text("n_folds: 3\ntrain: raw/tr.csv\n")
    ens.write_text("methods: [mean, stack_lr]\nsubmit: mean\nneighbours: 0.3\nneighbours_k: 7\n")
    (tmp_path / "m.yaml").write_text("kind: transformer\naugment: [eda]\nfreeze_layers: 2\n")
    (tmp_path / "c.yaml").write_text("kind: tfidf_lr\n")
    pseudo = tmp_path / "pseudo.yaml"
    pseudo.write_text("retrain: null\n")
    models = [tmp_path / "m.yaml", tmp_path / "c.yaml"]
    lines = makevars.render(comp, models, ens, pseudo).splitlines()[1:]
    assert lines == ["N_FOLDS := 3", "RAW := raw/tr.csv data/raw/test.csv data/raw/sample_submission.csv",
                     "DEPS_c :=", "DEPS_m := features/eda.parquet", "CACHED := m", "TRANSFORMERS := m",
                     "METHODS := mean stack_lr",
                     "NEIGHBOURS_K := 7", "NEIGHBOURS_EMBED_MODEL :=", "NEIGHBOURS_EMBED_K :=",
                     "RETRAIN := c m"]
    (tmp_path / "embed_lr.yaml").write_text("kind: embed_lr\n")  # the embedding graph's model, a member: on
    lines = makevars.render(comp, models + [tmp_path / "embed_lr.yaml"], ens, pseudo).splitlines()
    assert "NEIGHBOURS_EMBED_MODEL := embed_lr" in lines and "NEIGHBOURS_EMBED_K := 7" in lines
    ens.write_text("members: [c, m]\nneighbours: 0.3\nneighbours_k: 7\n")  # not a member of the blend: off
    lines = makevars.render(comp, models + [tmp_path / "embed_lr.yaml"], ens, pseudo).splitlines()
    assert "NEIGHBOURS_EMBED_MODEL :=" in lines
    ens.write_text("neighbours: 0.3\nneighbours_embed: 0.3\n")  # all of the move by embeddings: no TF-IDF graph
    lines = makevars.render(comp, models + [tmp_path / "embed_lr.yaml"], ens, pseudo).splitlines()
    assert "NEIGHBOURS_K :=" in lines and "NEIGHBOURS_EMBED_MODEL := embed_lr" in lines
    ens.write_text("neighbours: 0.3\nneighbours_embed_model: c\n")  # a tfidf_lr model has no embeddings
    with pytest.raises(config.ConfigError, match=r"key 'neighbours_embed_model': 'c' is a tfidf_lr model, not "
                                                 r"embed_lr"):
        makevars.render(comp, models, ens, pseudo)
    ens.write_text("methods: [mean, stack_lr]\nsubmit: mean\nneighbours: 0.3\nneighbours_k: 7\n")
    pseudo.write_text("retrain: [c]\n")  # m keeps its round-0 folds in every pseudo-label round
    assert makevars.render(comp, models, ens, pseudo).splitlines()[-1] == "RETRAIN := c"
    pseudo.write_text("retrain: [c, tfidf]\n")
    with pytest.raises(config.ConfigError, match=r"pseudo.yaml: key 'retrain': 'tfidf' is not a model"):
        makevars.render(comp, models, ens, pseudo)
    (tmp_path / "r1.yaml").write_text("kind: tfidf_lr\n")  # folds/r1/ would read as a round's folder
    with pytest.raises(config.ConfigError, match=r"r1.yaml: a model cannot be named like a pseudo-label round"):
        makevars.render(comp, [tmp_path / "r1.yaml"], ens, pseudo)
    comp.write_text("train: my data/train.csv\n")  # Make would read two words
    with pytest.raises(config.ConfigError, match=r"key 'train': 'my data/train.csv' cannot be a Make word"):
        makevars.render(comp, [], ens, pseudo)
    comp.write_text("n_folds: [\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        makevars.render(comp, [], ens, pseudo)


@pytest.mark.parametrize("stage,keys", [
    ("prep", [("", config.Competition)]), ("folds", [("", config.Competition)]),
    ("ensemble", [("", "Ensemble")]), ("pseudo", [("", "Pseudo")]),
    ("augment", [("eda.", "Eda"), ("backtrans.", "Backtrans")]), ("pretrain", [("", "Pretrain")]),
    ("train", [("", config.Model)] + [("params.", cls) for cls in kinds.PARAMS.values()])])
def test_every_stage_help_lists_its_config_keys(stage, keys, capsys):
    """`python -m foldstack.<stage> --help` names every key of the YAML the stage reads (and every kind's)."""
    import importlib
    module = importlib.import_module(f"foldstack.{stage}")
    with pytest.raises(SystemExit):
        module.main(["--help"])
    shown = capsys.readouterr().out
    for prefix, cls in keys:
        cls = getattr(module, cls) if isinstance(cls, str) else cls
        for f in dataclasses.fields(cls):
            assert re.search(rf"^  (--)?{re.escape(prefix + f.name)}[=:]", shown, re.M), f"{stage}: {prefix}{f.name}"


def test_make_folds_without_a_model_says_so_in_one_line(tmp_path):
    import subprocess
    from tests.conftest import empty_workspace
    ws = empty_workspace(tmp_path / "ws")
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ws), "folds"], capture_output=True, text=True)
    assert done.returncode != 0 and "no models/*.yaml here" in done.stderr
    assert "usage:" not in done.stderr  # not report.py's argparse complaint


def plan_workspace(tmp_path, tiny_bert, freeze: int = 0, classical: bool = True, extra: str = ""):
    """A tiny transformer `m` (`freeze` frozen layers: a shared cache), a classical member `svm` if `classical`, and
    a frozen transformer `extra` if named; 3 folds."""
    from tests.conftest import FAST, workspace, write_competition
    models = {"m": {"backbone": str(tiny_bert), "max_len": 32, "freeze_layers": freeze}}
    if classical:
        models["svm"] = {"kind": "tfidf_svm", "params": FAST["tfidf_svm"]}
    if extra:
        models[extra] = {"backbone": str(tiny_bert), "max_len": 32, "freeze_layers": 1}
    ws = workspace(tmp_path, {"text": ["text"], "label": "label", "n_folds": 3}, models)
    write_competition(ws, n_folds=3)
    return ws


def make_echo(ws, text: str, *flags: str, env: dict | None = None) -> str:
    """What the workspace's Makefile expands `text` to under `make flags` (with `env` added)."""
    from tests.conftest import make
    return make(ws, *flags, f"--eval=echo-it: ; @echo {text}", "echo-it", env=env).splitlines()[-1]


@pytest.mark.slow
def test_fold_waves_hold_back_only_a_lone_last_wave_transformer_fold(tmp_path, tiny_bert):
    """fold-waves trains every fold but the transformers' lone last-wave fold, which `make folds` then trains alone
    on every core; a full last wave, one job or more jobs than folds hold nothing back, and a resumed run counts only
    the folds still to train."""
    from tests.conftest import make
    ws = plan_workspace(tmp_path, tiny_bert)
    every = {(m, str(f)) for m in ("m", "svm") for f in range(3)}
    for jobs, held in ((1, None), (2, 2), (3, None), (4, None)):
        plan = make(ws, f"FOLD_JOBS={jobs}", "fold-waves", dry=True)
        trained = set(re.findall(r"foldstack\.train --model=models/(\w+)\.yaml --fold=(\d)", plan))
        assert trained == every - {("m", str(held))}, jobs
    (ws / "folds" / "m").mkdir(parents=True)
    (ws / "folds" / "m" / "fold0.npz").write_bytes(b"")  # as if an earlier run had trained fold 0: two left, a pair
    plan = make(ws, "FOLD_JOBS=2", "fold-waves", dry=True)
    assert "models/m.yaml --fold=2" in plan


@pytest.mark.slow
def test_make_j2_folds_trains_the_lone_last_fold_alone_on_every_core(tmp_path, tiny_bert):
    """`make -j 2 folds`: the transformer's folds 0-1 train side by side on half the cores each, then fold 2 alone
    on all of them (the thread counts each fold records), and every model is gathered; the cache keeps its share,
    the classical member beside it."""
    import os
    from tests.conftest import make
    ws = plan_workspace(tmp_path, tiny_bert, freeze=1)
    make(ws, "-j", "2", "folds", env={"OMP_NUM_THREADS": ""})  # blank: the Makefile's own thread counts
    cores = len(os.sched_getaffinity(0))
    assert thread_counts(ws) == ([max(1, cores // 2)], [max(1, cores // 2)] * 2 + [cores])
    assert all((ws / "folds" / m / "manifest.json").exists() for m in ("m", "svm"))


def thread_counts(ws) -> tuple[list[int], list[int]]:
    """The threads that built each frozen-layer cache, and that trained the transformer's folds 0-2."""
    import json
    caches = [json.loads(p.read_text())["threads"] for p in (ws / "features" / "cache").glob("*/meta.json")]
    return caches, [json.loads((ws / "folds" / "m" / f"fold{f}.json").read_text())["threads"] for f in range(3)]


@pytest.mark.slow
def test_make_j2_folds_builds_a_cache_with_nothing_beside_it_on_every_core(tmp_path, tiny_bert):
    """In a transformer-only workspace nothing can train beside the frozen-layer cache: `make -j 2 folds` builds it
    alone on every core, then trains the folds in the plan as before."""
    import os
    from tests.conftest import make
    ws = plan_workspace(tmp_path, tiny_bert, freeze=1, classical=False)
    make(ws, "-j", "2", "folds", env={"OMP_NUM_THREADS": ""})
    cores = len(os.sched_getaffinity(0))
    assert thread_counts(ws) == ([cores], [max(1, cores // 2)] * 2 + [cores])


@pytest.mark.slow
def test_a_cache_is_built_alone_only_when_no_other_model_has_folds_left(tmp_path, tiny_bert):
    """The lone cache step's condition: under -j 2, the one cache missing and no other model's fold to train
    (another frozen model's folds count, whether or not its cache is built); never under plain `make`."""

    def lone(ws, *flags):
        return make_echo(ws, "[$(lone_cache)]", *flags)

    def touch(ws, *paths):
        for path in paths:
            (ws / path).parent.mkdir(parents=True, exist_ok=True)
            (ws / path).write_bytes(b"")

    ws = plan_workspace(tmp_path / "a", tiny_bert, freeze=1)
    assert lone(ws, "-j2") == "[]"  # svm's folds could train beside the cache
    touch(ws, *(f"folds/svm/fold{f}.npz" for f in range(3)))
    assert lone(ws, "-j2") == "[features/cache/m.json]" and lone(ws) == "[]"
    ws = plan_workspace(tmp_path / "b", tiny_bert, freeze=1, classical=False, extra="m2")
    assert lone(ws, "-j2") == "[]"  # two caches to build: side by side on their shares
    touch(ws, "features/cache/m.json")
    assert lone(ws, "-j2") == "[]"  # m's folds could train beside m2's cache
    touch(ws, *(f"folds/m/fold{f}.npz" for f in range(3)))
    assert lone(ws, "-j2") == "[features/cache/m2.json]"
    ws = plan_workspace(tmp_path / "c", tiny_bert, freeze=1, extra="m2")  # a member added to a trained workspace
    touch(ws, "features/cache/m.json", *(f"folds/{m}/fold{f}.npz" for m in ("m", "svm") for f in range(3)))
    assert lone(ws, "-j2") == "[features/cache/m2.json]"  # m and svm done: their empty fold lists are no work


@pytest.mark.slow
def test_a_blank_runner_gpus_round_or_sub_counts_as_unset(tmp_path, tiny_bert):
    """RUNNER=" " or GPUS=" " in the environment (Make strips a blank given on its command line, not there) runs
    folds here on their share of the cores, as if unset: no runner, nothing left for the fold plan's checks. A blank
    ROUND is round 0 and a blank SUB scores the blend, as if unset."""
    ws = plan_workspace(tmp_path, tiny_bert)
    for blank in ("RUNNER", "GPUS"):
        shown = make_echo(ws, "[$(RUN)][$(RUNNER)$(GPUS)] $(fold_env)", "-j2", env={blank: " "})
        assert shown.startswith("[][] OMP_NUM_THREADS="), blank
    assert make_echo(ws, "[$(ROUND)][$(SUB)][$(or $(SUB),submit)]", env={"ROUND": " ", "SUB": " "}) == "[0][][submit]"
    assert make_echo(ws, "[$(ROUND)]", "ROUND=1") == "[1]"


@pytest.mark.slow
def test_pretraining_and_augmentation_take_their_share_of_the_cores_beside_the_folds(tmp_path, tiny_bert):
    """Under `make -j 2 folds` a model's pretraining and augmentation run beside folds: like a fold, each gets
    cores / 2 threads (two jobs of all the cores each would thrash)."""
    from tests.conftest import make
    ws = plan_workspace(tmp_path, tiny_bert)
    (ws / "models" / "pretrain" / "mlm.yaml").write_text(f"backbone: {tiny_bert}\n")
    plan = make(ws, "-j", "2", "models/pretrain/mlm/done.json", "features/eda.parquet", dry=True)
    for stage in ("pretrain", "augment"):
        line = next(line for line in plan.splitlines() if f"-m foldstack.{stage} " in line)
        assert line.startswith("OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(n=$(nproc) j=2;"), line


@pytest.mark.slow
def test_a_classical_fold_never_imports_torch(tmp_path):
    import subprocess
    import sys
    from tests.conftest import FAST, make, workspace, write_competition
    ws = workspace(tmp_path, {"text": ["text"], "label": "label", "n_folds": 3},
                   {"svm": {"kind": "tfidf_svm", "params": FAST["tfidf_svm"]}})
    write_competition(ws, n_folds=3)
    make(ws, "folds/folds.csv")
    code = ("import sys; from foldstack import train; train.main(['--model=models/svm.yaml', '--fold=0', "
            "'--out-dir=folds/svm']); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ws, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "False"
