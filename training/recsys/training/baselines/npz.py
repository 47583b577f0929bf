"""``model.npz`` I/O shared by the baselines: raw id maps are stored next to index-space arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        path = path / "model.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if path.is_dir():
        path = path / "model.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
