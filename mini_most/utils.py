"""Reproducibility and the notebook scale switch.

Every notebook runs at one of two scales, read from the environment variable MINI_MOST_SCALE:
"classroom" (the default: what the committed notebooks show) or "smoke" (a few steps, set by
`make test` so a student's test run takes minutes, not an hour)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

SCALES = ("smoke", "classroom")
# the repository's offline data; notebooks find it from here, so copies of them run anywhere
DATA_SAMPLES = Path(__file__).resolve().parent.parent / "data_samples"


def scale() -> str:
    """The scale notebooks run at: MINI_MOST_SCALE, default "classroom"."""
    s = os.environ.get("MINI_MOST_SCALE", "classroom")
    if s not in SCALES:
        raise ValueError(f"MINI_MOST_SCALE={s!r}; set it to one of {SCALES} (or leave it unset for classroom)")
    return s


def by_scale(smoke, classroom):
    """Pick a value by scale, e.g. steps = by_scale(smoke=5, classroom=300)."""
    return smoke if scale() == "smoke" else classroom


def set_seed(seed: int) -> None:
    """Seed Python, torch (CPU and CUDA) so that a rerun gives the same numbers."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:  # numpy is optional for the model itself
        pass
