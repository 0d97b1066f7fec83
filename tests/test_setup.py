"""`make setup` when several makes share one .venv (`make test` beside a workspace's run, two workspaces): they set
it up one at a time, and a make that waited finds the work done instead of running pip a second time."""
import os
import subprocess
from pathlib import Path

from tests.conftest import ROOT

# Stands in for the venv's python: logs each call's start and end (with its pid), slowly enough to overlap.
FAKE_PYTHON = """#!/bin/sh
echo "start $PPID $*" >> "$LOG"
sleep 0.3
echo "end $PPID" >> "$LOG"
"""


def fake_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(FAKE_PYTHON)
    (venv / "bin" / "python").chmod(0o755)
    tools = tmp_path / "tools"  # the best-effort apt steps find what they look for and install nothing
    tools.mkdir()
    for name, out in (("apertium", "spa-eng_US"), ("ldconfig", "libtcmalloc_minimal.so.4")):
        (tools / name).write_text(f"#!/bin/sh\necho {out}\n")
        (tools / name).chmod(0o755)
    return venv


def test_two_makes_sharing_a_venv_set_it_up_once(tmp_path):
    venv, log = fake_venv(tmp_path), tmp_path / "calls.log"
    env = {**os.environ, "LOG": str(log), "PATH": f"{tmp_path / 'tools'}:{os.environ['PATH']}"}
    cmd = ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "setup", f"VENV={venv}"]
    runs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [r.communicate(timeout=120)[0] for r in runs]
    assert all(r.returncode == 0 for r in runs), outputs
    events = log.read_text().splitlines()
    starts = [e for e in events if e.startswith("start")]
    assert len(starts) == len(set(starts)) and any("pip install" in e for e in starts), "one setup's calls, once each"
    assert all(a.startswith("start") and b == f"end {a.split()[1]}" for a, b in zip(events[::2], events[1::2])), \
        "no call overlaps another"
    assert (venv / ".foldstack-setup").exists()


def test_a_dry_run_of_setup_takes_no_lock_and_writes_nothing(tmp_path):
    venv = tmp_path / "venv"
    cmd = ["make", "-n", "--no-print-directory", "-f", str(ROOT / "Makefile"), "setup", f"VENV={venv}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pip install" in done.stdout and "flock" not in done.stdout
    assert list(tmp_path.iterdir()) == [], "a dry run writes nothing"
