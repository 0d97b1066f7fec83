"""Smoke runs of the bench harness on a tiny competition with a tiny encoder: `bench/bench.py --quick` (issue 15)
runs all three settings, the GEMM peak and the quality check in their own processes and reports every target;
`bench/levers.py --quick` runs the levers that patch the trainer. And every bench script's --help is its own (the
worker processes' parser must not take it over)."""
import json
import subprocess
import sys

import pytest
import yaml

from foldstack import prep
from tests.conftest import ROOT, make_tiny_bert, write_competition


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")
                                          if p.name not in ("benchlib.py", "settings.py")))
def test_bench_script_help_is_its_own(script):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--worker WORKER" not in done.stdout and done.stdout.count("--") > 3, done.stdout


def tiny_workspace(tmp_path, monkeypatch, n_train: int) -> str:
    """A prepared tiny competition in tmp_path (the cwd) and the path of a tiny model YAML for it."""
    tiny_bert = make_tiny_bert(tmp_path / "tiny_bert", positions=320)  # the recipe loop pads to 300 tokens
    write_competition(tmp_path, n_train=n_train, n_test=20)
    monkeypatch.chdir(tmp_path)
    prep.main(["--competition=data/competition.yaml", "--out-dir=data/processed", "--workers=1"])
    model = tmp_path / "tiny.yaml"
    model.write_text(yaml.safe_dump({"backbone": str(tiny_bert), "max_len": 32, "batch_size": 8, "lstm_hidden": 16,
                                     "amp": "off", "epochs": 1}))
    return str(model)


@pytest.mark.slow
def test_bench_quick_reports_every_target(tmp_path, monkeypatch):
    model = tiny_workspace(tmp_path, monkeypatch, n_train=200)
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--train=data/processed/train.parquet",
                           f"--model={model}", "--quick", "--no-augment", "--threads=1", "--gemm-n=256",
                           f"--out={out}"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert set(summary["targets"]) == {"train_vs_recipe", "train_vs_trainer", "infer_vs_trainer",
                                       "rss_trainer_over_foldstack"}
    for target in summary["targets"].values():
        assert target["median"] > 0 and target["verdict"] in ("PASS", "MISS")
    assert set(summary["settings"]) == {"foldstack", "trainer", "recipe"}
    assert summary["quality"]["verdict"] in ("PASS", "MISS")
    assert "targets (median of per-rep ratios)" in done.stdout
    assert summary["settings"]["foldstack"]["train"]["samples_per_s"] > 0


@pytest.mark.slow
def test_levers_quick_runs_the_levers_that_patch_the_trainer(tmp_path, monkeypatch):
    model = tiny_workspace(tmp_path, monkeypatch, n_train=120)
    out = tmp_path / "levers.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "levers.py"), "--train=data/processed/train.parquet",
                           f"--model={model}", "--quick", "--only=padding,width_train,sorted_infer,width_infer",
                           "--threads=1", f"--out={out}"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    levers = json.loads(out.read_text())["levers"]
    assert set(levers) == {"padding", "width_train", "sorted_infer", "width_infer"}
    for lever in levers.values():
        assert all(v["rate"] > 0 for v in lever["variants"].values())
    assert len(levers["width_infer"]["variants"]) == 5
