"""A fold's fitted model on disk, beside its OOF part, so that `make predict` and `make export` can apply it again.

  transformer  <model-dir>/fold<k>.safetensors   every tensor of the classifier's state dict (the frozen lower
                                                 layers included), float32, or float16 / bfloat16 in a bundle
  classical    <model-dir>/fold<k>.joblib        the fitted foldstack.classical.FittedMember (vectorizers, SVD,
                                                 estimator): a pickle, so only load files you trust; bundles
                                                 check each file's SHA-256 against their manifest first
Several seeds per fold: fold<k>.s<i>.<ext>, one per seed, averaged at prediction time as training did.
Weights are read with safetensors, which holds tensors only and runs no code on load.
"""
from __future__ import annotations

import re
from pathlib import Path

from .io import atomic_path

EXTENSIONS = (".safetensors", ".joblib")


def remove(out: Path, fold: int) -> None:
    """Delete fold<k>'s model files (a retrained fold must not leave an older seed or kind behind)."""
    if Path(out).is_dir():
        for path in files(out, fold):
            path.unlink()


def save(fitted, out: Path, fold: int) -> list[Path]:
    """One fitted model (a state dict or a FittedMember) or a list of them (one per seed) -> the files written."""
    remove(out, fold)
    runs = fitted if isinstance(fitted, list) else [fitted]
    paths = []
    for i, model in enumerate(runs):
        if model is None:
            continue
        stem = f"fold{fold}" if len(runs) == 1 else f"fold{fold}.s{i}"
        paths.append(_save_one(model, out / stem))
    return paths


def _save_one(model, stem: Path) -> Path:
    if isinstance(model, dict):
        from safetensors.torch import save_file
        path = stem.with_name(stem.name + ".safetensors")
        with atomic_path(path) as tmp:
            # contiguous copies: safetensors refuses views and tensors that share memory
            save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.items()}, str(tmp))
        return path
    import joblib
    path = stem.with_name(stem.name + ".joblib")
    with atomic_path(path) as tmp:
        joblib.dump(model, tmp)
    return path


def files(model_dir: Path, fold: int) -> list[Path]:
    """fold<k>'s model files, seeds in order; [] when the fold kept none."""
    pattern = re.compile(rf"fold{fold}(\.s(\d+))?({'|'.join(re.escape(e) for e in EXTENSIONS)})$")
    found = [(int(m.group(2) or 0), p) for p in Path(model_dir).iterdir() if (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def load(path: Path):
    """A state dict (float32 tensors) or a FittedMember."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    import joblib
    return joblib.load(path)


def save_half(src: Path, dest: Path, half: str) -> None:
    """A .safetensors file with its floating-point tensors in fp16 or bf16 (`load` turns them back into fp32)."""
    import torch
    from safetensors.torch import load_file, save_file
    dtype = torch.float16 if half == "fp16" else torch.bfloat16
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
    with atomic_path(dest) as tmp:
        save_file(tensors, str(tmp))
