"""Where a fold target's command runs: here on a free device slot, or as a task on a Ray cluster.

Make stays the source of truth for what is pending and what depends on what: each fold recipe calls
`python -m foldstack.runner [--slots=0,1 | --ray] -- <the command>`, and `make -j N` starts N of them at once.

  --slots=0,1,2   one machine, several GPUs: the command waits for a free slot (a lock file per device under
                  --lock-dir, held while it runs, so two jobs never share a device) and runs with
                  CUDA_VISIBLE_DEVICES set to that device. Nothing here can run CUDA: the slot pool is tested with
                  a fake device list.
  --ray           many machines: the command runs as one Ray task on the cluster named by RAY_ADDRESS (max_calls=1,
                  so a GPU's memory is freed between folds), in the same working directory (the workspace must be on
                  a filesystem every node sees), requesting 1 GPU when the cluster has GPUs and the model is a
                  transformer, and --cpus CPUs. The task's output comes back to this terminal through Ray's log
                  forwarding; its exit code is this command's. Every stage writes its files under a temporary name
                  and renames them, so a task that fails or is killed leaves nothing that looks done, and `make`
                  resumes exactly as after a local interruption.
  (neither)       the command runs here, as it would without the runner.

Run    make -j 2 folds GPUS=0,1     make -j 8 folds RUNNER=ray   (RAY_ADDRESS=head:6379; pip install -e .[ray])
"""
from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path


def acquire_slot(devices: list[str], lock_dir: Path, poll: float = 0.5):
    """(device, open lock file) for the first free device; blocks until one is free. The lock is released when the
    file is closed or the process dies (fcntl), so a killed job never holds a device."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for device in devices:
            fh = open(lock_dir / f"device-{device}.lock", "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            return device, fh
        time.sleep(poll)


def run_on_slot(cmd: list[str], devices: list[str], lock_dir: Path) -> int:
    device, lock = acquire_slot(devices, lock_dir)
    try:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": device}
        return subprocess.run(cmd, env=env).returncode
    finally:
        lock.close()


def describe(cmd: list[str]) -> str:
    """`model m fold k` for a train command, else the command."""
    args = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
    if "model" in args and "fold" in args:
        return f"model {Path(args['model']).stem} fold {args['fold']}"
    return " ".join(cmd)


def wants_gpu(cmd: list[str]) -> bool:
    """A transformer's fold (the model YAML's kind) wants a GPU; classical members run on CPUs."""
    model = next((a.split("=", 1)[1] for a in cmd if a.startswith("--model=")), None)
    if model is None or not Path(model).exists():
        return False
    import yaml
    return (yaml.safe_load(Path(model).read_text()) or {}).get("kind", "transformer") == "transformer"


def run_on_ray(cmd: list[str], cpus: float) -> int:
    """The command as one Ray task in this working directory; its exit code."""
    import ray
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=True, logging_level="ERROR",
             configure_logging=False)
    gpus = 1 if wants_gpu(cmd) and ray.cluster_resources().get("GPU", 0) > 0 else 0
    env = {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "HF_", "MKL_", "TOKENIZERS_"))}

    @ray.remote(max_calls=1)
    def task(cmd, cwd, env):
        done = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env})  # output goes to the driver via Ray's logs
        return done.returncode

    ref = task.options(num_cpus=cpus, num_gpus=gpus).remote(cmd, os.getcwd(), env)
    try:
        code = ray.get(ref)
    except ray.exceptions.RayError as err:
        print(f"runner: ray task for {describe(cmd)} failed: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    if code:
        print(f"runner: ray task for {describe(cmd)} exited with {code}", file=sys.stderr)
    return code


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slots", default=None, help="comma-separated devices (CUDA ids); one job per device")
    ap.add_argument("--lock-dir", default=".slots", help="where the per-device lock files live")
    ap.add_argument("--ray", action="store_true", help="run the command as a task on the Ray cluster (RAY_ADDRESS)")
    ap.add_argument("--cpus", type=float, default=1, help="CPUs a Ray task requests")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command after --")
    if args.ray:
        sys.exit(run_on_ray(cmd, args.cpus))
    if args.slots:
        sys.exit(run_on_slot(cmd, [d for d in args.slots.split(",") if d], Path(args.lock_dir)))
    sys.exit(subprocess.run(cmd).returncode)


if __name__ == "__main__":
    main()
