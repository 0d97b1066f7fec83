"""foldstack.runner: the GPU slot pool (with a fake device list: nothing here has CUDA) and folds as tasks on a real
local Ray cluster, whose results equal a sequential run's, also after the run is killed and resumed."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from foldstack import runner
from tests.conftest import FAST, TINY, empty_workspace, make, write_competition

JOB = """import json, os, sys, time
start = time.time(); time.sleep(0.6)
open(sys.argv[1], "w").write(json.dumps([os.environ["CUDA_VISIBLE_DEVICES"], start, time.time()]))"""


def test_slot_pool_gives_each_parallel_job_its_own_device(tmp_path):
    jobs = [subprocess.Popen([sys.executable, "-m", "foldstack.runner", "--slots=7,9", f"--lock-dir={tmp_path}",
                              "--", sys.executable, "-c", JOB, str(tmp_path / f"job{i}.json")]) for i in range(4)]
    assert all(j.wait(timeout=60) == 0 for j in jobs)
    runs = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(4)]
    assert {device for device, _, _ in runs} == {"7", "9"}
    for i, (dev_a, start_a, end_a) in enumerate(runs):
        for dev_b, start_b, end_b in runs[i + 1:]:
            if dev_a == dev_b:
                assert end_a <= start_b or end_b <= start_a, "two jobs shared a device"


def test_runner_passes_the_exit_code_and_names_folds(tmp_path):
    fail = [sys.executable, "-c", "raise SystemExit(3)"]
    assert subprocess.run([sys.executable, "-m", "foldstack.runner", "--", *fail]).returncode == 3
    cmd = ["python", "-m", "foldstack.train", "--model=models/tiny.yaml", "--fold=2", "--out-dir=folds/tiny"]
    assert runner.describe(cmd) == "model tiny fold 2"
    (tmp_path / "t.yaml").write_text("kind: transformer\n")
    (tmp_path / "c.yaml").write_text("kind: tfidf_lr\n")
    assert runner.wants_gpu([f"--model={tmp_path / 't.yaml'}"]) and not runner.wants_gpu([f"--model={tmp_path / 'c.yaml'}"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A real Ray head on 127.0.0.1 with 2 CPUs and no dashboard; its address."""
    pytest.importorskip("ray", reason="make test installs the [ray] extra")
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats",
                    f"--temp-dir={tmp_path_factory.mktemp('ray')}"], env=env, check=True, capture_output=True)
    yield f"127.0.0.1:{port}"
    subprocess.run([str(ray), "stop", "--force"], env=env, capture_output=True)


def workspace(root: Path, tiny_bert) -> Path:
    ws = root / "ws"
    empty_workspace(ws)
    write_competition(ws, n_train=90, n_test=30)
    (ws / "models" / "tfidf_lr.yaml").write_text(yaml.safe_dump({"kind": "tfidf_lr", "params": FAST["tfidf_lr"]}))
    (ws / "models" / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "backbone": str(tiny_bert), "max_len": 32}))
    (ws / "ensemble" / "ensemble.yaml").write_text(yaml.safe_dump({"methods": ["mean"], "submit": "mean"}))
    return ws


def same_results(a: Path, b: Path) -> None:
    for model in ("tfidf_lr", "tiny"):
        for name in ("oof.npy", "test.npy"):
            np.testing.assert_allclose(np.load(a / "folds" / model / name), np.load(b / "folds" / model / name),
                                       atol=1e-6, err_msg=f"{model}/{name}")
    assert (a / "submissions" / "mean.csv").read_text() == (b / "submissions" / "mean.csv").read_text()


@pytest.mark.slow
def test_folds_on_ray_equal_a_sequential_run_also_after_a_kill(ray_cluster, tmp_path, tiny_bert):
    sequential = workspace(tmp_path / "seq", tiny_bert)
    make(sequential, "submit")
    on_ray = workspace(tmp_path / "ray", tiny_bert)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ray_cluster}
    cmd = ["make", "--no-print-directory", "-C", str(on_ray), "-j", "2", "submit", "RUNNER=ray"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while not list((on_ray / "folds").glob("*/fold*.npz")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # mid-run: some folds done, others running on the cluster
    first.wait()
    time.sleep(3)  # a task whose driver died may still finish its fold: its files are renamed into place whole
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ray" in (done.stdout + done.stderr).lower() or "foldstack.runner --ray" in done.stdout
    same_results(sequential, on_ray)  # a killed task's temporary files are never taken as done
