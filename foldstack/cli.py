"""`foldstack init DIR`: scaffold a competition workspace whose Makefile includes this project's rules.

Writes DIR/Makefile, DIR/data/competition.yaml (a template to edit), the default member set into DIR/models/:
models/extra/*.yaml (competition defaults: a 2-epoch transformer, members too slow for the demo) and the demo's
models/*.yaml where extra/ has no file of that name,
models/pretrain/minilm_mlm.yaml (used only when a model names it as backbone), a .gitignore that keeps the data and
every artefact out of git and the YAML configs in, and the empty stage folders. Existing files are never
overwritten. Then: put the CSVs in DIR/data/raw/, edit the YAML, and run `make folds submit` inside DIR.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("data/raw", "features", "models", "folds", "ensemble", "submissions")

COMPETITION_TEMPLATE = """\
# Describe your competition; every key is listed in the foldstack README.
train: data/raw/train.csv
test: data/raw/test.csv
sample_submission: data/raw/sample_submission.csv
sep: ","              # "\\t" for TSV
id: id
text: [title, abstract]
label: label          # multilabel: one delimited column (label_sep: " ") or a list of 0/1 columns
task: multiclass      # multiclass | binary | multilabel
group: null           # a column whose rows must stay in one fold
metric: accuracy      # accuracy | macro_f1 | micro_f1 | log_loss
n_folds: 5
seed: 42
"""

# Data and artefacts stay out of a workspace's repository; the configs that say what was run stay in.
GITIGNORE = """\
/data/*
!/data/competition.yaml
/features/*
!/features/*.yaml
/folds/
/models/*
!/models/*.yaml
!/models/extra/
!/models/pretrain/
/models/pretrain/*
!/models/pretrain/*.yaml
/ensemble/*
!/ensemble/*.yaml
/submissions/
/reports/
/.stamps/
/build/
"""


def write_new(path: Path, text: str) -> None:
    if not path.exists():
        path.write_text(text)


def init(target: Path) -> None:
    for folder in FOLDERS:
        (target / folder).mkdir(parents=True, exist_ok=True)
    write_new(target / "Makefile", f"# A foldstack workspace: the rules live in the project.\ninclude {ROOT}/Makefile\n")
    write_new(target / "data" / "competition.yaml", COMPETITION_TEMPLATE)
    write_new(target / ".gitignore", GITIGNORE)
    (target / "models" / "pretrain").mkdir(exist_ok=True)
    # models/extra first: where both hold a name (minilm_bilstm), the competition default wins over the demo's
    members = sorted((ROOT / "models" / "extra").glob("*.yaml")) + sorted((ROOT / "models").glob("*.yaml"))
    targets = [(src, target / "models" / src.name) for src in members]
    targets += [(src, target / "models" / "pretrain" / src.name) for src in (ROOT / "models" / "pretrain").glob("*.yaml")]
    for src, dest in targets:
        if not dest.exists():
            shutil.copy(src, dest)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="foldstack", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="scaffold a workspace").add_argument("dir", type=Path)
    # the stages' own parsers take the rest (`foldstack predict --help`)
    sub.add_parser("predict", help="predict a test file (python -m foldstack.predict)", add_help=False)
    sub.add_parser("export", help="write an offline bundle (python -m foldstack.bundle)", add_help=False)
    args, rest = ap.parse_known_args(argv)
    if args.command in ("predict", "export"):
        from . import bundle, predict
        return (predict.main if args.command == "predict" else bundle.main)(rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    init(args.dir)
    print(f"workspace {args.dir}: put train/test/sample_submission in data/raw/, edit data/competition.yaml, "
          f"`make -C {args.dir} prep` (it recommends max_len and truncation for models/minilm_bilstm.yaml), "
          f"then `make -C {args.dir} folds submit`")


if __name__ == "__main__":
    main()
