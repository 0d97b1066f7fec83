"""Content-hash staleness (foldstack.stamp + the Makefile's stamp rules): a new modification time with the same bytes
re-runs nothing, new bytes re-run exactly what depends on them, and `make -n` writes nothing in the workspace."""
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from foldstack import stamp
from tests.conftest import FAST, empty_workspace, make, write_competition


def test_stamp_moves_only_when_the_bytes_change(tmp_path):
    f, s = tmp_path / "a.csv", tmp_path / "st" / "a.sha"
    f.write_text("x,y\n1,2\n")
    os.utime(f, ns=(10**18, 10**18))
    assert stamp.update(f, s) == "new" and s.stat().st_mtime_ns == 10**18, "a new stamp takes the file's time"
    assert stamp.update(f, s) == "same"
    os.utime(f, ns=(2 * 10**18, 2 * 10**18))  # touched, copied, checked out: same bytes
    assert stamp.update(f, s) == "touched" and s.stat().st_mtime_ns == 10**18
    os.utime(s, ns=(3 * 10**18, 3 * 10**18))  # the stamp itself copied without its times
    assert stamp.update(f, s) == "same" and s.stat().st_mtime_ns == 10**18
    before = time.time_ns()
    f.write_text("x,y\n1,3\n")
    assert stamp.update(f, s) == "changed" and s.stat().st_mtime_ns >= before
    assert stamp.update(tmp_path / "gone.csv", tmp_path / "st" / "gone.sha") == "missing"
    assert not (tmp_path / "st" / "gone.sha").exists()
    assert stamp.refresh(tmp_path / "st", []) == []
    os.utime(f, ns=(time.time_ns() + 10**10,) * 2)  # a source touched: left alone, only its record follows
    assert stamp.refresh(tmp_path / "st", [], [str(f)]) == [] and f.stat().st_mtime_ns > s.stat().st_mtime_ns
    art = tmp_path / "art.npz"
    art_stamp = stamp.stamp_path(tmp_path / "st", str(art))  # the name the Makefile gives its stamp
    art.write_bytes(b"weights")
    assert stamp.update(art, art_stamp, artefact=True) == "new"
    built = art.stat().st_mtime_ns
    os.utime(art, ns=(built + 10**10,) * 2)  # copied without its time: the artefact gets its time back
    assert stamp.refresh(tmp_path / "st", [str(art)]) == [] and art.stat().st_mtime_ns == built
    os.utime(art, ns=(built + 10**10,) * 2)
    assert stamp.update(art, art_stamp) == "touched"  # a rule rebuilt it with the same bytes
    assert stamp.refresh(tmp_path / "st", [str(art)]) == [str(art)], "left newer than its stamp: reported"


def test_member_list_stamp_moves_when_a_word_goes_and_a_dry_run_agrees(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    st, lst = Path("st"), "build/members.txt"
    dry_st = tmp_path / "dry"

    def both(words):  # the dry run's stamp (on a copy) must get the time the real run then gives
        shutil.rmtree(dry_st, ignore_errors=True)
        if st.is_dir():
            shutil.copytree(st, dry_st)
        stamp.update_list(dry_st, lst, words, dry=True)
        stamp.update_list(st, lst, words)
        return stamp.stamp_path(st, lst).stat().st_mtime_ns, stamp.stamp_path(dry_st, lst).stat().st_mtime_ns

    real, dry = both(["b", "a"])
    assert Path(lst).read_text() == "a b\n" and real == dry == 0, "a first list: no change known"
    assert both(["a", "b"]) == (0, 0)
    Path(lst).unlink()  # build/ removed: the same list comes back, nothing changed
    assert both(["a", "b"]) == (0, 0) and Path(lst).exists()
    before = time.time_ns()
    real, dry = both(["a"])
    assert real >= before and dry >= before and Path(lst).read_text() == "a\n"
    assert not list(Path("build").glob(".*.tmp"))


def snapshot(ws: Path) -> dict:
    """Every file of the workspace, stamps included -> (size, mtime_ns)."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in ws.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def built_once(tmp_path_factory):
    ws = tmp_path_factory.mktemp("stamps") / "ws"
    empty_workspace(ws)
    write_competition(ws, n_train=90, n_test=30)
    for name in ("tfidf_lr", "nbsvm"):
        (ws / "models" / f"{name}.yaml").write_text(yaml.safe_dump({"kind": name, "params": FAST[name]}))
    (ws / "ensemble" / "ensemble.yaml").write_text(yaml.safe_dump({"methods": ["mean", "weighted"]}))
    make(ws, "submit")
    return ws


@pytest.fixture
def built(built_once, tmp_path):
    """A copy of the built workspace, times kept (the stamps record paths relative to it)."""
    ws = tmp_path / "ws"
    shutil.copytree(built_once, ws, symlinks=True)
    return ws


def work(plan: str) -> list[str]:
    """The plan's lines that do work (not stamp checks, not the always-run submit)."""
    return [line for line in plan.splitlines() if "foldstack." in line and "foldstack.stamp" not in line
            and "ensemble submit" not in line and "foldstack.makevars" not in line]


@pytest.mark.slow
def test_new_times_same_bytes_rerun_nothing(built, tmp_path):
    later = time.time_ns() + 10**11
    for p in built.rglob("*"):  # every input, config and artefact gets a new time, stamps included
        if p.is_file():
            os.utime(p, ns=(later, later))
    assert work(make(built, "-n", "submit")) == []
    assert work(make(built, "submit")) == []
    copy = tmp_path / "copy"  # a backup restored without its times, files in whatever order
    shutil.copytree(built, copy, copy_function=shutil.copyfile, symlinks=True)
    assert work(make(copy, "-n", "submit")) == []


@pytest.mark.slow
def test_new_bytes_rerun_exactly_their_dependents_and_dry_runs_write_nothing(built):
    cfg = built / "models" / "nbsvm.yaml"
    cfg.write_text(cfg.read_text() + "seed: 7\n")
    before = snapshot(built)
    plan = work(make(built, "-n", "submit"))
    assert snapshot(built) == before, "make -n writes nothing, not even a stamp"
    trains = [line for line in plan if "foldstack.train" in line]
    assert len(trains) == 3 and all("models/nbsvm.yaml" in line for line in trains)
    assert not any("foldstack.prep" in line or "foldstack.folds" in line for line in plan)
    raw = built / "data" / "raw" / "train.csv"
    raw.write_text(raw.read_text().replace("tr0,", "tr0x,", 1))
    plan = work(make(built, "-n", "submit"))
    assert snapshot(built) == before | {raw: (raw.stat().st_size, raw.stat().st_mtime_ns)}
    assert any("foldstack.prep" in line for line in plan) and sum("foldstack.train" in line for line in plan) == 6
    out = make(built, "submit")
    assert out.count("foldstack.train") == 6


@pytest.mark.slow
def test_dry_pseudo_writes_nothing(built):
    before = snapshot(built)
    plan = make(built, "-n", "pseudo")
    assert "then pseudo-label rounds" in plan and "next round" not in plan, "next-round did not run"
    assert snapshot(built) == before


@pytest.mark.slow
def test_a_removed_model_leaves_every_blend(built):
    """Make cannot see a prerequisite that disappeared: the member list (build/members.txt) makes it visible."""
    (built / "models" / "nbsvm.yaml").unlink()
    shutil.rmtree(built / "build")  # generated files only: the list is judged by its stamp, not by being there
    before = snapshot(built)
    plan = work(make(built, "-n", "submit"))
    assert snapshot(built) == before, "make -n writes nothing, not even the member list"
    assert sorted(line.split("--method=")[1].split()[0] for line in plan if "ensemble fit" in line) == \
        ["mean", "weighted"] and not any("foldstack.train" in line for line in plan)
    make(built, "submit")
    board = (built / "ensemble" / "leaderboard.json").read_text()
    assert "nbsvm" not in board and "tfidf_lr" in board
    shutil.rmtree(built / "folds" / "nbsvm")
    assert "nbsvm" not in make(built, "score")
    shutil.rmtree(built / "build")
    assert work(make(built, "-n", "submit")) == [], "a member list that did not change re-blends nothing"
    assert work(make(built, "submit")) == []
