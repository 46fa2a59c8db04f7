"""Reproducibility, the notebook scale switch, where the shipped data lives, and the precision switch.

Every notebook runs at one of two scales, read from the environment variable MINI_MOST_SCALE:
"classroom" (the default: what the committed notebooks show) or "smoke" (a few steps, set by
`make test` so a student's test run takes minutes, not an hour)."""

from __future__ import annotations

import contextlib
import functools
import os
import random
from pathlib import Path

import torch

SCALES = ("smoke", "classroom")
# the repository's offline data; notebooks find it from here, so copies of them run anywhere
DATA_SAMPLES = Path(__file__).resolve().parent.parent / "data_samples"


def device_here(name: str | None = None) -> torch.device:
    """The torch device `name` (None: cuda when there is one, else cpu), checked to exist on this
    machine: a ValueError with torch's reason, not a failure halfway through a run."""
    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"device {name!r}: {e}") from e
    return device


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


# --- precision: "auto" (bf16 autocast where the device runs it), "bf16" or "fp32" ---
PRECISIONS = ("auto", "bf16", "fp32")


@functools.cache
def bf16_works(device_type: str) -> bool:
    """Whether bf16 autocast runs a matmul on this device type (old CPUs and builds may not)."""
    try:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            x = torch.ones(4, 4, device=device_type)   # no random numbers: the global RNG stays untouched
            return bool(((x @ x) == 4).all())
    except (RuntimeError, AssertionError):
        return False


def uses_bf16(precision: str, device_type: str) -> bool:
    """Whether `precision` ("auto", "bf16", "fp32") means bf16 autocast on this device type."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {PRECISIONS}")
    return precision == "bf16" or (precision == "auto" and bf16_works(device_type))


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """The forward passes' precision: bf16 autocast where `precision` asks for it, else fp32."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=uses_bf16(precision, device_type))
