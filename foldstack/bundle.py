"""export stage: everything `foldstack predict` needs, in one folder that runs offline without the workspace.

Reads  the workspace's data/competition.yaml, data/processed/classes.json, ensemble[/r<r>]/<method>/ (scores.json,
       blender.pkl) and leaderboard.json, and for each of the method's members models/<m>.yaml and
       folds/<m>[/r<r>]/ (manifest.json and every fold's model file; the folder the round's leaderboard names),
       each transformer's tokenizer and config (an embed_lr member's whole encoder), WordNet when a member reads
       lemmas, data/processed/train.parquet when the blend smooths over neighbours (ensemble.yaml `neighbours`),
       features/neighbours_k<k>_<model>.npz's train embeddings when it smooths over an embed_lr member's embeddings
Writes DIR/ laid out like a workspace of one round and one method:
         data/competition.yaml  data/processed/{classes.json,train.parquet (id, text, labels)}  models/<m>.yaml  folds/<m>/{manifest.json,fold<k>.*}
         ensemble/<method>/{scores.json,blender.pkl}  backbones/<m>/  nltk_data/  wheels/foldstack-*.whl
         features/neighbours_k<k>_<model>.npz (train_embeddings only)
         manifest.json (last): foldstack and library versions, the method, its members, each file's SHA-256
Run    make export DIR=bundle [ROUND=r] [METHOD=m] [HALF=fp16|bf16]
       python -m foldstack.bundle --out=bundle [--round=r] [--method=m] [--half=fp16]
Use    on the offline machine: pip install --no-index --find-links DIR/wheels foldstack scikit-learn==<the
       manifest's> [lightgbm==<the manifest's>] (torch, transformers, pandas, nltk already there, as on Kaggle), then
       foldstack predict --bundle=DIR new_test.csv --out=submission.csv

A bundle holds pickled scikit-learn objects (fold<k>.joblib, blender.pkl): loading a pickle can run code, so a bundle
is trusted code, like a notebook. `verify` checks every file's hash against the manifest before anything is loaded,
which catches corruption and edits, not a forged manifest: only use bundles you made or trust.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from . import __version__, config, fold_models
from .errors import one_line_errors
from .io import InputError, save_json
from .stamp import sha256

FORMAT = 1
PINNED = ("scikit-learn", "lightgbm")  # their pickles must be read by the version that wrote them


@dataclass(frozen=True)
class Layout:
    """Where predict finds each file: a workspace (round r) or an export bundle (one round, flattened)."""
    root: Path
    round: int = 0
    is_bundle: bool = False

    def _round(self, path: Path) -> Path:
        return path if self.round == 0 or self.is_bundle else path / f"r{self.round}"

    @property
    def competition(self) -> Path:
        return self.root / "data" / "competition.yaml"

    @property
    def classes(self) -> Path:
        return self.root / "data" / "processed" / "classes.json"

    def model_yaml(self, member: str) -> Path:
        return self.root / "models" / f"{member}.yaml"

    @cached_property
    def _round_members(self) -> dict[str, Path]:
        """Pseudo round r's member folders as its leaderboard records them (read once)."""
        board = self.ensemble_dir / "leaderboard.json"
        if not self.round or self.is_bundle or not board.exists():
            return {}
        rows = json.loads(board.read_text())["rows"]
        return {r["name"]: self.root / Path(r["test_npy"]).parent for r in rows if r["kind"] == "member"}

    def member_dir(self, member: str) -> Path:
        """folds/<m>/, or in pseudo round r the folder the round's blend read: folds/<m>/r<r>/, or folds/<m>/ for a
        model the rounds do not retrain (pseudo.yaml `retrain`)."""
        return self._round_members.get(member) or self._round(self.root / "folds" / member)

    @property
    def ensemble_dir(self) -> Path:
        return self._round(self.root / "ensemble")

    def backbone(self, member: str) -> Path | None:
        """The bundle's copy of a member's backbone files, or None (the model YAML's backbone is used)."""
        path = self.root / "backbones" / member
        return path if self.is_bundle and path.is_dir() else None

    @property
    def nltk_data(self) -> Path | None:
        path = self.root / "nltk_data"
        return path if self.is_bundle and path.is_dir() else None


def chosen_method(layout: Layout, method: str | None) -> str:
    if method:
        return method
    board = layout.ensemble_dir / "leaderboard.json"
    if not board.exists():
        raise InputError(f"{board} not found: run `make submit` first (or name a method)")
    return json.loads(board.read_text())["chosen"]


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("torch", "transformers", "tokenizers", *PINNED, "numpy", "pandas", "nltk", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def verify(root: Path) -> dict:
    """The bundle's manifest, after checking versions and every file's presence and hash; InputError otherwise."""
    path = Path(root) / "manifest.json"
    if not path.exists():
        raise InputError(f"{path}: not found: {root} is not a foldstack bundle (make export DIR=...)")
    man = json.loads(path.read_text())
    if man.get("format") != FORMAT or man.get("foldstack") != __version__:
        raise InputError(f"{path}: made by foldstack {man.get('foldstack')} (format {man.get('format')}); this is "
                         f"foldstack {__version__}: install the wheel in {root}/wheels/")
    here = library_versions()
    for name in man.get("pinned", PINNED):
        if man["versions"].get(name) != here[name]:
            raise InputError(f"{path}: made with {name} {man['versions'].get(name)}, this machine has {here[name]} "
                             f"(its pickles need the same version: pip install {name}=={man['versions'].get(name)})")
    for rel, digest in man["files"].items():
        f = Path(root) / rel
        if not f.exists():
            raise InputError(f"{f}: missing from the bundle (listed in its manifest.json)")
        if sha256(f) != digest:
            raise InputError(f"{f}: its SHA-256 differs from the bundle's manifest.json (changed since export)")
    for folder in ("folds", "ensemble", "models", "data"):  # what predict loads: nothing unlisted may sit there
        for f in sorted((Path(root) / folder).rglob("*")):
            if f.is_file() and str(f.relative_to(root)) not in man["files"]:
                raise InputError(f"{f}: not listed in the bundle's manifest.json (added after export?)")
    return man


def copy_member(layout: Layout, member: str, out: Path, half: str | None) -> None:
    """models/<m>.yaml, folds/<m>/manifest.json and every fold's model (half: float16/bfloat16 weights)."""
    src = layout.member_dir(member)
    man = json.loads((src / "manifest.json").read_text())
    cfg = config.load(config.Model, layout.model_yaml(member))
    if config.config_hash(cfg) != man["config_hash"]:
        raise InputError(f"{layout.model_yaml(member)}: changed since {src} was trained (re-run make folds)")
    shutil.copy(layout.model_yaml(member), out / "models" / f"{member}.yaml")
    dest = out / "folds" / member
    dest.mkdir(parents=True)
    shutil.copy(src / "manifest.json", dest / "manifest.json")
    for k in range(len(man["fold_scores"])):
        found = fold_models.files(src, k)
        if not found:
            raise InputError(f"{src}/fold{k}: no saved model (trained with keep_models: false? re-run make folds)")
        for f in found:
            if f.suffix == ".safetensors" and half:
                fold_models.save_half(f, dest / f.name, half)
            else:
                shutil.copy(f, dest / f.name)
    if cfg.kind == "transformer":
        save_backbone(cfg.backbone, out / "backbones" / member, weights=False)
    elif cfg.kind == "embed_lr":
        save_backbone(cfg.options.backbone, out / "backbones" / member, weights=True)


def copy_train_texts(src: Path, dest: Path) -> None:
    """The train texts and labels, which a blend with neighbour smoothing votes with (foldstack.predict)."""
    import pandas as pd
    train = pd.read_parquet(src)
    train[[c for c in ("id", "text", "label", "labels") if c in train]].to_parquet(dest, index=False)


def copy_train_embeddings(layout: Layout, smoothing: dict, dest_root: Path) -> None:
    """The embedding graph's train rows, which predict joins to the new texts' embeddings (foldstack.predict),
    checked first against the member's config (a stale graph stops the export, not the offline prediction)."""
    import numpy as np

    from .neighbours import graph_path, load_train_embeddings
    model, graph = smoothing["embed"]["model"], graph_path(smoothing["k"], smoothing["embed"]["model"])
    man = json.loads((layout.member_dir(model) / "manifest.json").read_text())
    model_hash = man["config_hash"]
    embeddings = load_train_embeddings(layout.root / graph, man["n_train"], model_hash)
    (dest_root / graph).parent.mkdir(parents=True, exist_ok=True)
    np.savez(dest_root / graph, train_embeddings=embeddings, model_hash=model_hash)


def save_backbone(name: str, dest: Path, weights: bool) -> None:
    """The tokenizer and the encoder's config (and with `weights` the encoder itself) into dest, offline-loadable."""
    from transformers import AutoConfig

    from .encoder import load_encoder, load_tokenizer, resolve_backbone
    load_tokenizer(name).save_pretrained(dest)
    if weights:
        load_encoder(name).save_pretrained(dest)
    else:
        AutoConfig.from_pretrained(resolve_backbone(name)).save_pretrained(dest)


def copy_wordnet(out: Path) -> None:
    """The NLTK WordNet corpus the lemmatizer reads, so a lemma member works where `make setup` never ran."""
    import nltk
    corpus = Path(nltk.data.find("corpora/wordnet"))
    shutil.copytree(corpus, out / "nltk_data" / "corpora" / "wordnet")


def build_wheel(out: Path) -> None:
    """foldstack itself as a wheel (best effort: needs the source tree this package was installed from). Built from
    a clean copy of the sources, so no stale build/ folder of the source tree can slip older modules in."""
    import tempfile
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").exists():
        print("export: no foldstack source tree here; install foldstack on the offline machine yourself")
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(root / "foldstack", src / "foldstack", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(root / name, src / name)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                               "-w", str(out / "wheels"), str(src)], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["pip wheel failed"])[-1]
        print(f"export: could not build the foldstack wheel ({last}); install foldstack on the offline machine")


def download_wheels(out: Path, names: list[str]) -> None:
    """This machine's versions of the libraries whose pickles the bundle holds, as wheels in out/wheels/ (best
    effort: an offline notebook installs them with pip install --no-index --find-links DIR/wheels)."""
    versions = library_versions()
    specs = [f"{name}=={versions[name]}" for name in names if versions[name]]
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                           "-d", str(out / "wheels"), *specs], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"export: could not download {' '.join(specs)} wheels; the offline machine needs these versions")


def export(layout: Layout, method: str | None, out: Path, half: str | None = None, wheels: bool = True) -> dict:
    """Copy what `method` needs into `out` (which must not exist) and write its manifest last; returns it."""
    method = chosen_method(layout, method)
    scores_path = layout.ensemble_dir / method / "scores.json"
    if not scores_path.exists():
        raise InputError(f"{scores_path} not found: run `make submit` (or make {scores_path}) first")
    if out.exists():
        raise InputError(f"{out}: already exists; a bundle is written into a new folder")
    if not (layout.ensemble_dir / method / "blender.pkl").exists():
        raise InputError(f"{layout.ensemble_dir / method}/blender.pkl not found: make submit first")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        return _fill(layout, method, members_of(scores_path), out, tmp, half, wheels)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written bundle is left behind
        raise


def members_of(scores_path: Path) -> list[str]:
    return json.loads(scores_path.read_text())["members"]


def _fill(layout: Layout, method: str, members: list[str], out: Path, tmp: Path, half: str | None,
          wheels: bool) -> dict:
    for folder in ("data/processed", "models", "folds", f"ensemble/{method}"):
        (tmp / folder).mkdir(parents=True)
    shutil.copy(layout.competition, tmp / "data" / "competition.yaml")
    shutil.copy(layout.classes, tmp / "data" / "processed" / "classes.json")
    smoothing = json.loads((layout.ensemble_dir / method / "scores.json").read_text()).get("neighbours")
    if smoothing:
        copy_train_texts(layout.classes.parent / "train.parquet", tmp / "data" / "processed" / "train.parquet")
    if smoothing and "embed" in smoothing:
        copy_train_embeddings(layout, smoothing, tmp)
    for name in ("scores.json", "blender.pkl"):
        shutil.copy(layout.ensemble_dir / method / name, tmp / "ensemble" / method / name)
    save_json(tmp / "ensemble" / "leaderboard.json", {"chosen": method})
    cfgs = [config.load(config.Model, layout.model_yaml(m)) for m in members]
    for member in members:
        copy_member(layout, member, tmp, half)
    if any(cfg.text == "lemma" for cfg in cfgs):
        copy_wordnet(tmp)
    uses_lgbm = method == "stack_lgbm" or any(cfg.kind == "tfidf_lgbm" for cfg in cfgs)
    pinned = [name for name in PINNED if name != "lightgbm" or uses_lgbm]
    if wheels:
        build_wheel(tmp)
        download_wheels(tmp, pinned)
    files = {str(p.relative_to(tmp)): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    man = {"format": FORMAT, "foldstack": __version__, "versions": library_versions(), "method": method,
           "members": members, "round": layout.round, "half": half, "files": files, "pinned": pinned,
           "bytes": sum((tmp / rel).stat().st_size for rel in files)}
    save_json(tmp / "manifest.json", man)
    tmp.rename(out)  # the folder appears whole, or not at all
    return man


@one_line_errors
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the bundle folder to create (must not exist)")
    ap.add_argument("--workspace", default=".", help="the workspace holding data/, models/, folds/, ensemble/")
    ap.add_argument("--round", type=int, default=0, help="pseudo-label round whose models and blend to export")
    ap.add_argument("--method", default=None, help="the blend to export (default: the leaderboard's chosen one)")
    ap.add_argument("--half", choices=("fp16", "bf16"), default=None,
                    help="store transformer weights in half precision (half the size; predictions within ~1e-3)")
    ap.add_argument("--no-wheels", action="store_true",
                    help="leave out the foldstack, scikit-learn and LightGBM wheels (for a machine that has them)")
    args = ap.parse_args(argv)
    layout = Layout(Path(args.workspace), args.round)
    man = export(layout, args.method, Path(args.out), args.half, not args.no_wheels)
    print(f"export: {args.out} ({man['method']} of {len(man['members'])} members, {len(man['files'])} files, "
          f"{man['bytes'] / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
